-- Demo orders for the refund example (SQLite), loaded once by [seed].
-- Dates are relative to the first start, so the 30-day rule has one order
-- on each side of it.
CREATE TABLE orders (
  id TEXT PRIMARY KEY,
  customer_id TEXT NOT NULL,
  item TEXT NOT NULL,
  amount REAL NOT NULL,
  status TEXT NOT NULL DEFAULT 'delivered',
  ordered_at TEXT NOT NULL
);

INSERT INTO orders (id, customer_id, item, amount, status, ordered_at) VALUES
  ('O-2001', 'C-1001', 'Blender, 1.5 l', 89.90, 'delivered', strftime('%Y-%m-%dT%H:%M:%SZ', 'now', '-6 days')),
  ('O-2002', 'C-1002', 'Espresso machine', 449.00, 'delivered', strftime('%Y-%m-%dT%H:%M:%SZ', 'now', '-12 days')),
  ('O-2003', 'C-1003', 'Gift card', 50.00, 'delivered', strftime('%Y-%m-%dT%H:%M:%SZ', 'now', '-3 days')),
  ('O-2004', 'C-1001', 'Winter jacket', 129.00, 'delivered', strftime('%Y-%m-%dT%H:%M:%SZ', 'now', '-45 days'));
