-- User snapshots at hour boundaries T (a row for each hour the user was active, plus the
-- user's later snapshots within 30 days of a late event, which now see it in their windows).
-- Windows [T - w, T) over hourly aggregates: only events with event_ts < T count.
CREATE TEMP TABLE _user_targets ON COMMIT DROP AS
SELECT user_id, hour_ts + interval '1 hour' AS ts FROM _user_hours
UNION
SELECT f.user_id, f.event_timestamp
FROM user_features f
JOIN (SELECT user_id, min(hour_ts) AS m FROM _user_hours GROUP BY user_id) a USING (user_id)
WHERE f.event_timestamp > a.m AND f.event_timestamp <= a.m + interval '30 days';
ANALYZE _user_targets;

DELETE FROM user_features f USING _user_targets t
WHERE f.user_id = t.user_id AND f.event_timestamp = t.ts;

WITH agg AS (
    SELECT t.user_id, t.ts,
           coalesce(sum(h.impressions) FILTER (WHERE h.hour_ts >= t.ts - interval '1 hour'), 0) AS i1h,
           coalesce(sum(h.clicks)      FILTER (WHERE h.hour_ts >= t.ts - interval '1 hour'), 0) AS c1h,
           coalesce(sum(h.impressions) FILTER (WHERE h.hour_ts >= t.ts - interval '1 day'), 0) AS i1d,
           coalesce(sum(h.clicks)      FILTER (WHERE h.hour_ts >= t.ts - interval '1 day'), 0) AS c1d,
           coalesce(sum(h.impressions) FILTER (WHERE h.hour_ts >= t.ts - interval '7 days'), 0) AS i7d,
           coalesce(sum(h.clicks)      FILTER (WHERE h.hour_ts >= t.ts - interval '7 days'), 0) AS c7d,
           sum(h.impressions) AS i30d, sum(h.clicks) AS c30d,
           sum(h.purchases) AS p30d, sum(h.units) AS u30d, sum(h.spend) AS s30d,  -- numeric: exact, order-free
           max(h.last_event_ts) AS last_ts
    FROM _user_targets t
    JOIN feature_user_hourly h ON h.user_id = t.user_id
                              AND h.hour_ts >= t.ts - interval '30 days' AND h.hour_ts < t.ts
    GROUP BY t.user_id, t.ts
),
cats AS (
    SELECT user_id, ts,
           max(category) FILTER (WHERE rk = 1) AS c1,
           coalesce(max(n::float8 / tot) FILTER (WHERE rk = 1), 0) AS s1,
           max(category) FILTER (WHERE rk = 2) AS c2,
           coalesce(max(n::float8 / tot) FILTER (WHERE rk = 2), 0) AS s2,
           max(category) FILTER (WHERE rk = 3) AS c3,
           coalesce(max(n::float8 / tot) FILTER (WHERE rk = 3), 0) AS s3
    FROM (
        SELECT t.user_id, t.ts, c.category, sum(c.interactions) AS n,
               sum(sum(c.interactions)) OVER (PARTITION BY t.user_id, t.ts) AS tot,
               row_number() OVER (PARTITION BY t.user_id, t.ts
                                  ORDER BY sum(c.interactions) DESC, c.category) AS rk
        FROM _user_targets t
        JOIN feature_user_category_hourly c
          ON c.user_id = t.user_id
         AND c.hour_ts >= t.ts - interval '30 days' AND c.hour_ts < t.ts
        GROUP BY t.user_id, t.ts, c.category
    ) r
    GROUP BY user_id, ts
),
hours AS (
    SELECT user_id, ts,
           max(hod) FILTER (WHERE rk = 1) AS hod,
           max(n::float8 / tot) FILTER (WHERE rk = 1) AS share,
           count(*) AS nh
    FROM (
        SELECT t.user_id, t.ts, extract(hour FROM h.hour_ts)::bigint AS hod,
               sum(h.events) AS n,
               sum(sum(h.events)) OVER (PARTITION BY t.user_id, t.ts) AS tot,
               row_number() OVER (PARTITION BY t.user_id, t.ts
                                  ORDER BY sum(h.events) DESC,
                                           extract(hour FROM h.hour_ts)) AS rk
        FROM _user_targets t
        JOIN feature_user_hourly h ON h.user_id = t.user_id
                                  AND h.hour_ts >= t.ts - interval '30 days' AND h.hour_ts < t.ts
        GROUP BY t.user_id, t.ts, extract(hour FROM h.hour_ts)
    ) r
    GROUP BY user_id, ts
)
INSERT INTO user_features (
    user_id, event_timestamp,
    impressions_1h, clicks_1h, ctr_1h, impressions_1d, clicks_1d, ctr_1d,
    impressions_7d, clicks_7d, ctr_7d, impressions_30d, clicks_30d, ctr_30d,
    purchases_30d, units_30d, spend_30d, avg_price_paid_30d, last_event_ts_s,
    top_category_1, top_category_1_share, top_category_2, top_category_2_share,
    top_category_3, top_category_3_share, most_active_hour, active_hour_share,
    active_hours_count)
SELECT a.user_id, a.ts,
       a.i1h, a.c1h, coalesce(a.c1h::float8 / nullif(a.i1h, 0), 0),
       a.i1d, a.c1d, coalesce(a.c1d::float8 / nullif(a.i1d, 0), 0),
       a.i7d, a.c7d, coalesce(a.c7d::float8 / nullif(a.i7d, 0), 0),
       a.i30d, a.c30d, coalesce(a.c30d::float8 / nullif(a.i30d, 0), 0),
       a.p30d, a.u30d, a.s30d::float8, (a.s30d / nullif(a.u30d, 0))::float8,
       extract(epoch FROM a.last_ts)::bigint,
       c.c1, coalesce(c.s1, 0), c.c2, coalesce(c.s2, 0), c.c3, coalesce(c.s3, 0),
       h.hod, h.share, h.nh
FROM agg a
LEFT JOIN cats c USING (user_id, ts)
JOIN hours h USING (user_id, ts);
