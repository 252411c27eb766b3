-- Hourly aggregates, recomputed (not incremented) for every (key, hour) a new batch touches,
-- from all clean events of that hour: re-running a batch or a late event cannot double count.
-- Every join also matches date_trunc('hour', event_ts) = hour_ts (the same condition as the
-- range, the pipeline runs in UTC as 00_new_events does): it gives the planner a
-- (key, hour) hash key. Joined on the key alone, a busy item's every event met every one of
-- its hours (at 1M events 336M pairs for the item table), growing with the square of events.
DELETE FROM feature_user_hourly h USING _user_hours k
WHERE h.user_id = k.user_id AND h.hour_ts = k.hour_ts;

INSERT INTO feature_user_hourly
SELECT k.user_id, k.hour_ts,
       count(*),
       count(*) FILTER (WHERE e.event_type = 'impression'),
       count(*) FILTER (WHERE e.event_type = 'click'),
       count(*) FILTER (WHERE e.event_type = 'view'),
       count(*) FILTER (WHERE e.event_type = 'search'),
       count(*) FILTER (WHERE e.event_type = 'add_to_cart'),
       count(*) FILTER (WHERE e.event_type = 'purchase'),
       coalesce(sum(coalesce(e.quantity, 1)) FILTER (WHERE e.event_type = 'purchase'), 0),
       coalesce(sum(coalesce(e.quantity, 1) * e.price)
                FILTER (WHERE e.event_type = 'purchase'), 0),
       count(*) FILTER (WHERE e.event_type = 'return'),
       max(e.event_ts)
FROM _user_hours k
JOIN events e ON e.user_id = k.user_id
             AND e.event_ts >= k.hour_ts AND e.event_ts < k.hour_ts + interval '1 hour'
             AND date_trunc('hour', e.event_ts) = k.hour_ts
WHERE NOT e.is_bot
GROUP BY k.user_id, k.hour_ts;

DELETE FROM feature_user_category_hourly h USING _user_hours k
WHERE h.user_id = k.user_id AND h.hour_ts = k.hour_ts;

INSERT INTO feature_user_category_hourly
SELECT k.user_id, i.category, k.hour_ts,
       count(*),
       count(*) FILTER (WHERE e.event_type = 'click'),
       count(*) FILTER (WHERE e.event_type = 'purchase')
FROM _user_hours k
JOIN events e ON e.user_id = k.user_id
             AND e.event_ts >= k.hour_ts AND e.event_ts < k.hour_ts + interval '1 hour'
             AND date_trunc('hour', e.event_ts) = k.hour_ts
JOIN items i ON i.item_id = e.item_id
WHERE NOT e.is_bot AND e.event_type IN ('view', 'click', 'add_to_cart', 'purchase')
GROUP BY k.user_id, i.category, k.hour_ts;

DELETE FROM feature_item_hourly h USING _item_hours k
WHERE h.item_id = k.item_id AND h.hour_ts = k.hour_ts;

INSERT INTO feature_item_hourly
SELECT k.item_id, k.hour_ts,
       count(*) FILTER (WHERE e.event_type = 'impression'),
       count(*) FILTER (WHERE e.event_type = 'click'),
       count(*) FILTER (WHERE e.event_type = 'view'),
       count(*) FILTER (WHERE e.event_type = 'add_to_cart'),
       count(*) FILTER (WHERE e.event_type = 'purchase'),
       coalesce(sum(coalesce(e.quantity, 1)) FILTER (WHERE e.event_type = 'purchase'), 0)
FROM _item_hours k
JOIN events e ON e.item_id = k.item_id
             AND e.event_ts >= k.hour_ts AND e.event_ts < k.hour_ts + interval '1 hour'
             AND date_trunc('hour', e.event_ts) = k.hour_ts
WHERE NOT e.is_bot
GROUP BY k.item_id, k.hour_ts;

DELETE FROM feature_query_hourly h USING _query_hours k
WHERE h.query = k.query AND h.hour_ts = k.hour_ts;

INSERT INTO feature_query_hourly
SELECT q.query, coalesce(i.category, ''), q.hour_ts,
       count(*) FILTER (WHERE q.event_type = 'search'),
       count(*) FILTER (WHERE q.event_type = 'click' AND i.category IS NOT NULL)
FROM (
    SELECT k.query, k.hour_ts, e.event_type, e.item_id
    FROM _query_hours k
    JOIN events e ON e.event_ts >= k.hour_ts AND e.event_ts < k.hour_ts + interval '1 hour'
                 AND nullif(lower(btrim(e.query)), '') = k.query
                 AND date_trunc('hour', e.event_ts) = k.hour_ts
    WHERE NOT e.is_bot AND e.event_type IN ('search', 'click')
) q
LEFT JOIN items i ON q.event_type = 'click' AND i.item_id = q.item_id
GROUP BY q.query, coalesce(i.category, ''), q.hour_ts;
