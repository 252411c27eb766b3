-- Clean (non-bot) events of the batches being processed, and the keys they touch.
-- _new_batches(batch_id) is filled by features/pipeline.py before this file runs.
CREATE TEMP TABLE _new_events ON COMMIT DROP AS
SELECT e.event_id, e.user_id, e.session_id, e.event_type, e.item_id,
       nullif(lower(btrim(e.query)), '') AS query, e.event_ts,
       date_trunc('hour', e.event_ts) AS hour_ts
FROM events e
JOIN _new_batches b USING (batch_id)
WHERE NOT e.is_bot;

CREATE TEMP TABLE _user_hours ON COMMIT DROP AS
SELECT DISTINCT user_id, hour_ts FROM _new_events;

CREATE TEMP TABLE _item_hours ON COMMIT DROP AS
SELECT DISTINCT item_id, hour_ts FROM _new_events WHERE item_id IS NOT NULL;

CREATE TEMP TABLE _query_hours ON COMMIT DROP AS
SELECT DISTINCT query, hour_ts FROM _new_events
WHERE query IS NOT NULL AND event_type IN ('search', 'click');

CREATE TEMP TABLE _sessions ON COMMIT DROP AS
SELECT DISTINCT user_id, session_id FROM _new_events;

ANALYZE _new_events; ANALYZE _user_hours; ANALYZE _item_hours; ANALYZE _query_hours;
ANALYZE _sessions;
