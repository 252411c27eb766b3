-- (user, category) affinity snapshots at T for each category the user touched in the hour
-- before T (plus later snapshots within 30 days of a late event).
-- uc_affinity_30d = the category's share of the user's interactions in [T - 30d, T).
CREATE TEMP TABLE _uc_targets ON COMMIT DROP AS
SELECT c.user_id, c.category, c.hour_ts + interval '1 hour' AS ts
FROM feature_user_category_hourly c
JOIN _user_hours k ON k.user_id = c.user_id AND k.hour_ts = c.hour_ts
UNION
SELECT f.user_id, f.category, f.event_timestamp
FROM user_category_features f
JOIN (SELECT user_id, min(hour_ts) AS m FROM _user_hours GROUP BY user_id) a USING (user_id)
WHERE f.event_timestamp > a.m AND f.event_timestamp <= a.m + interval '30 days';
ANALYZE _uc_targets;

DELETE FROM user_category_features f USING _uc_targets t
WHERE f.user_id = t.user_id AND f.category = t.category AND f.event_timestamp = t.ts;

WITH tot AS (
    SELECT t.user_id, t.ts, sum(c.interactions) AS n
    FROM (SELECT DISTINCT user_id, ts FROM _uc_targets) t
    JOIN feature_user_category_hourly c
      ON c.user_id = t.user_id AND c.hour_ts >= t.ts - interval '30 days' AND c.hour_ts < t.ts
    GROUP BY t.user_id, t.ts
)
INSERT INTO user_category_features (user_id, category, event_timestamp, uc_interactions_30d,
                                    uc_clicks_30d, uc_purchases_30d, uc_affinity_30d)
SELECT t.user_id, t.category, t.ts,
       sum(c.interactions), sum(c.clicks), sum(c.purchases),
       sum(c.interactions)::float8 / max(tot.n)
FROM _uc_targets t
JOIN feature_user_category_hourly c
  ON c.user_id = t.user_id AND c.category = t.category
 AND c.hour_ts >= t.ts - interval '30 days' AND c.hour_ts < t.ts
JOIN tot ON tot.user_id = t.user_id AND tot.ts = t.ts
GROUP BY t.user_id, t.category, t.ts;
