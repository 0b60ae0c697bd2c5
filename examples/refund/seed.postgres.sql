-- Demo orders for the refund example (Postgres), loaded once by [seed].
CREATE TABLE orders (
  id TEXT PRIMARY KEY,
  customer_id TEXT NOT NULL,
  item TEXT NOT NULL,
  amount DOUBLE PRECISION NOT NULL,
  status TEXT NOT NULL DEFAULT 'delivered',
  ordered_at TEXT NOT NULL
);

INSERT INTO orders (id, customer_id, item, amount, status, ordered_at) VALUES
  ('O-2001', 'C-1001', 'Blender, 1.5 l', 89.90, 'delivered', to_char((now() - interval '6 days') AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')),
  ('O-2002', 'C-1002', 'Espresso machine', 449.00, 'delivered', to_char((now() - interval '12 days') AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')),
  ('O-2003', 'C-1003', 'Gift card', 50.00, 'delivered', to_char((now() - interval '3 days') AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')),
  ('O-2004', 'C-1001', 'Winter jacket', 129.00, 'delivered', to_char((now() - interval '45 days') AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'));
