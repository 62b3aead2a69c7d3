-- Times were stored as RFC 3339 with the fewest fractional digits, which
-- do not sort as text: 12:00:05.1 came after 12:00:05.12, so a customer's
-- orders placed within a second could be listed out of order. Times are
-- now written with nine fractional digits. The rows written before are
-- dropped here; the projection, under a new name, rebuilds them from the
-- order events when the service starts.
DELETE FROM order_summaries;
