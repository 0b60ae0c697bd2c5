-- Demo transactions for the reconciliation example, loaded once by [seed].
CREATE TABLE transactions (
  id TEXT PRIMARY KEY,
  amount REAL NOT NULL,
  date TEXT NOT NULL,
  description TEXT NOT NULL,
  reconciled INTEGER NOT NULL DEFAULT 0,
  category TEXT,
  confidence REAL
);

INSERT INTO transactions (id, amount, date, description) VALUES
  ('TX-001', -42.50, '2026-11-02', 'AWS EMEA invoice 8812'),
  ('TX-002', -1200.00, '2026-11-03', 'Office rent November'),
  ('TX-003', 5400.00, '2026-11-04', 'Customer payment ACME Corp INV-2031'),
  ('TX-004', -18.90, '2026-11-05', 'Uber ride airport'),
  ('TX-005', -230.00, '2026-11-06', 'Adobe Creative Cloud annual'),
  ('TX-006', -9.99, '2026-11-07', 'Unknown merchant 4471'),
  ('TX-007', 780.00, '2026-11-08', 'Customer payment Globex INV-2034'),
  ('TX-008', -64.00, '2026-11-09', 'Team lunch Trattoria');
