-- Session state after each clean non-impression event, for every session a new batch
-- touched (whole sessions are recomputed, so late events land in order). These are the very
-- values features/realtime.py pushes online when the event happens; the push never adds to
-- them. One row per (user_id, event_timestamp): the last event of a tie wins.
DELETE FROM user_session_features f USING _sessions s
WHERE f.user_id = s.user_id AND f.session_id = s.session_id;

CREATE TEMP TABLE _session_events ON COMMIT DROP AS
SELECT e.event_id, e.user_id, e.session_id, e.event_type, e.item_id, e.event_ts, i.category
FROM _sessions s
JOIN events e ON e.user_id = s.user_id AND e.session_id = s.session_id
LEFT JOIN items i ON i.item_id = e.item_id
WHERE NOT e.is_bot AND e.event_type <> 'impression';
CREATE INDEX ON _session_events (user_id, session_id, event_ts, event_id)
    WHERE event_type IN ('view', 'click', 'add_to_cart') AND item_id IS NOT NULL;
ANALYZE _session_events;

WITH state AS (
    SELECT ev.*,
           count(*) OVER w AS n_events,
           count(*) FILTER (WHERE event_type = 'view') OVER w AS n_views,
           count(*) FILTER (WHERE event_type = 'click') OVER w AS n_clicks,
           count(*) FILTER (WHERE event_type = 'add_to_cart') OVER w AS n_atc,
           count(*) FILTER (WHERE event_type = 'search') OVER w AS n_searches
    FROM _session_events ev
    WINDOW w AS (PARTITION BY user_id, session_id ORDER BY event_ts, event_id
                 ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
)
INSERT INTO user_session_features (event_id, user_id, event_timestamp, session_id,
                                   session_events, session_views, session_clicks,
                                   session_add_to_carts, session_searches,
                                   last_viewed_items, last_viewed_categories)
SELECT DISTINCT ON (s.user_id, s.event_ts)
       s.event_id, s.user_id, s.event_ts, s.session_id,
       s.n_events, s.n_views, s.n_clicks, s.n_atc, s.n_searches,
       coalesce(lv.items, ''), coalesce(lv.cats, '')
FROM state s
LEFT JOIN LATERAL (
    SELECT string_agg(x.item_id, '|' ORDER BY x.event_ts DESC, x.event_id DESC) AS items,
           string_agg(coalesce(x.category, ''), '|' ORDER BY x.event_ts DESC, x.event_id DESC) AS cats
    FROM (
        SELECT p.item_id, p.category, p.event_ts, p.event_id
        FROM _session_events p
        WHERE p.user_id = s.user_id AND p.session_id = s.session_id
          AND p.event_type IN ('view', 'click', 'add_to_cart') AND p.item_id IS NOT NULL
          AND (p.event_ts, p.event_id) <= (s.event_ts, s.event_id)
        ORDER BY p.event_ts DESC, p.event_id DESC
        LIMIT 5
    ) x
) lv ON true
ORDER BY s.user_id, s.event_ts, s.session_id DESC, s.event_id DESC
ON CONFLICT (user_id, event_timestamp) DO UPDATE SET
    event_id = excluded.event_id, session_id = excluded.session_id,
    session_events = excluded.session_events, session_views = excluded.session_views,
    session_clicks = excluded.session_clicks, session_add_to_carts = excluded.session_add_to_carts,
    session_searches = excluded.session_searches, last_viewed_items = excluded.last_viewed_items,
    last_viewed_categories = excluded.last_viewed_categories;
