-- Demo tickets for the ticket-triage example, loaded once by [seed].
CREATE TABLE tickets (
  id TEXT PRIMARY KEY,
  customer_id TEXT NOT NULL,
  subject TEXT NOT NULL,
  body TEXT NOT NULL,
  status TEXT NOT NULL DEFAULT 'open',
  created_at TEXT NOT NULL
);

INSERT INTO tickets (id, customer_id, subject, body, status, created_at) VALUES
  ('T-1001', 'C-1001', 'Order has not arrived', 'I ordered a kettle two weeks ago (order O-5512) and it still has not arrived. Tracking has not moved in 8 days.', 'open', '2026-11-20T09:12:00Z'),
  ('T-1002', 'C-1002', 'Wrong size delivered', 'I ordered the jacket in M but received an L. How do I swap it?', 'open', '2026-11-21T14:30:00Z'),
  ('T-1003', 'C-1003', 'Love the new app!', 'Just wanted to say the new mobile app is great, checkout is so much faster.', 'open', '2026-11-22T08:05:00Z'),
  ('T-1004', 'C-1001', 'Charged twice', 'My card was charged twice for order O-5512. Please refund the duplicate charge.', 'open', '2026-11-23T17:45:00Z'),
  ('T-1005', 'C-1004', 'Cannot log in', 'Password reset emails never arrive. I have checked spam.', 'open', '2026-11-24T11:20:00Z'),
  ('T-1006', 'C-1005', 'Discount code rejected', 'The code WINTER10 from your newsletter says it is invalid.', 'open', '2026-11-25T10:00:00Z'),
  ('T-1007', 'C-1006', 'Item arrived broken', 'The ceramic bowl arrived in pieces. Photos attached. This is the second time.', 'open', '2026-11-26T19:10:00Z'),
  ('T-1008', 'C-1007', 'Change delivery address', 'Can I still change the delivery address for order O-6120? I am moving.', 'open', '2026-11-27T07:55:00Z'),
  ('T-1009', 'C-1008', 'Cancel my subscription', 'Please cancel my monthly coffee subscription effective immediately.', 'open', '2026-11-28T13:40:00Z'),
  ('T-1010', 'C-1002', 'Still waiting on the swap', 'It has been a week since I asked to swap the jacket (T-1002). Nobody has answered. I am getting frustrated.', 'open', '2026-11-29T16:25:00Z');
