-- Item snapshots at hour boundaries T for each hour the item was touched (plus later
-- snapshots within 30 days of a late event). Windows [T - w, T) over hourly aggregates.
-- price / listed_at / category come from the current `items` row (items carry no history).
CREATE TEMP TABLE _item_targets ON COMMIT DROP AS
SELECT item_id, hour_ts + interval '1 hour' AS ts FROM _item_hours
UNION
SELECT f.item_id, f.event_timestamp
FROM item_features f
JOIN (SELECT item_id, min(hour_ts) AS m FROM _item_hours GROUP BY item_id) a USING (item_id)
WHERE f.event_timestamp > a.m AND f.event_timestamp <= a.m + interval '30 days';
ANALYZE _item_targets;

DELETE FROM item_features f USING _item_targets t
WHERE f.item_id = t.item_id AND f.event_timestamp = t.ts;

CREATE TEMP TABLE _category_price ON COMMIT DROP AS
SELECT category, percentile_cont(0.5) WITHIN GROUP (ORDER BY price::float8) AS median_price,
       count(*) AS n_items
FROM items GROUP BY category;

-- Windows as running sums over each item's hourly series, one pass per series: a target at T
-- sits on the hourly row of T - 1h (the hour that made the item active), and [T - 30d, T) is
-- that row and the 719 hours before it. Summing per target instead re-reads up to 720 rows
-- per snapshot, which is quadratic in an item's active hours.
WITH bounds AS (
    SELECT item_id, min(ts) - interval '31 days' AS lo, max(ts) AS hi
    FROM _item_targets GROUP BY item_id
), series AS (
    SELECT h.item_id, h.hour_ts + interval '1 hour' AS ts,
           sum(h.impressions) OVER w7 AS i7d, sum(h.clicks) OVER w7 AS c7d,
           sum(h.clicks + h.views + h.add_to_carts + h.purchases) OVER w7 AS n7d,
           sum(h.impressions) OVER w30 AS i30d, sum(h.clicks) OVER w30 AS c30d,
           sum(h.views) OVER w30 AS v30d, sum(h.add_to_carts) OVER w30 AS a30d,
           sum(h.purchases) OVER w30 AS p30d,
           sum(h.clicks + h.views + h.add_to_carts + h.purchases) OVER w30 AS n30d
    FROM feature_item_hourly h
    JOIN bounds b ON b.item_id = h.item_id AND h.hour_ts >= b.lo AND h.hour_ts < b.hi
    WINDOW w7 AS (PARTITION BY h.item_id ORDER BY h.hour_ts
                  RANGE BETWEEN interval '167 hours' PRECEDING AND CURRENT ROW),
           w30 AS (PARTITION BY h.item_id ORDER BY h.hour_ts
                   RANGE BETWEEN interval '719 hours' PRECEDING AND CURRENT ROW)
), agg AS (
    SELECT s.* FROM series s JOIN _item_targets t ON t.item_id = s.item_id AND t.ts = s.ts
)
INSERT INTO item_features (
    item_id, event_timestamp, item_category,
    item_impressions_7d, item_clicks_7d, item_ctr_smoothed_7d, item_impressions_30d, item_clicks_30d, item_ctr_smoothed_30d,
    item_add_to_cart_rate_30d, item_conversion_rate_30d, item_purchases_30d, item_popularity_trend,
    item_price, item_price_rel_category, item_listed_at_s, item_age_days)
SELECT a.item_id, a.ts, i.category,
       a.i7d, a.c7d,
       (a.c7d + %(ctr_prior)s * %(ctr_prior_strength)s) / (a.i7d + %(ctr_prior_strength)s),
       a.i30d, a.c30d,
       (a.c30d + %(ctr_prior)s * %(ctr_prior_strength)s) / (a.i30d + %(ctr_prior_strength)s),
       a.a30d::float8 / greatest(a.c30d + a.v30d, 1),
       a.p30d::float8 / greatest(a.c30d + a.v30d, 1),
       a.p30d,
       (a.n7d / 7.0 + 1.0 / 30) / (a.n30d / 30.0 + 1.0 / 30),
       i.price::float8,
       i.price::float8 / cp.median_price,
       extract(epoch FROM i.listed_at)::bigint,
       greatest(extract(epoch FROM a.ts - i.listed_at) / 86400.0, 0)
FROM agg a
JOIN items i ON i.item_id = a.item_id
JOIN _category_price cp ON cp.category = i.category;

-- Category snapshots at T for each category with an item touched in the hour before T, plus
-- the category's later snapshots within 30 days of a late event: a late event of one item
-- changes its category's windows at hours when only other items of the category were active.
CREATE TEMP TABLE _category_targets ON COMMIT DROP AS
SELECT DISTINCT i.category, t.ts
FROM _item_targets t JOIN items i USING (item_id)
UNION
SELECT f.category, f.event_timestamp
FROM category_features f
JOIN (SELECT i.category, min(k.hour_ts) AS m
      FROM _item_hours k JOIN items i USING (item_id) GROUP BY i.category) a USING (category)
WHERE f.event_timestamp > a.m AND f.event_timestamp <= a.m + interval '30 days';

DELETE FROM category_features f USING _category_targets t
WHERE f.category = t.category AND f.event_timestamp = t.ts;

-- Categories the same way: hourly totals of the category's items, then running 30-day sums.
WITH bounds AS (
    SELECT category, min(ts) - interval '31 days' AS lo, max(ts) AS hi
    FROM _category_targets GROUP BY category
), hourly AS (
    SELECT i.category, h.hour_ts, sum(h.impressions) AS impressions, sum(h.clicks) AS clicks,
           sum(h.purchases) AS purchases
    FROM feature_item_hourly h
    JOIN items i ON i.item_id = h.item_id
    JOIN bounds b ON b.category = i.category AND h.hour_ts >= b.lo AND h.hour_ts < b.hi
    GROUP BY i.category, h.hour_ts
), series AS (
    SELECT category, hour_ts + interval '1 hour' AS ts,
           sum(impressions) OVER w30 AS i30d, sum(clicks) OVER w30 AS c30d,
           sum(purchases) OVER w30 AS p30d
    FROM hourly
    WINDOW w30 AS (PARTITION BY category ORDER BY hour_ts
                   RANGE BETWEEN interval '719 hours' PRECEDING AND CURRENT ROW)
)
INSERT INTO category_features (category, event_timestamp, cat_impressions_30d, cat_clicks_30d,
                               cat_ctr_smoothed_30d, cat_purchases_30d, cat_n_items, cat_median_price)
SELECT t.category, t.ts, s.i30d, s.c30d,
       (s.c30d + %(ctr_prior)s * %(ctr_prior_strength)s) / (s.i30d + %(ctr_prior_strength)s),
       s.p30d, cp.n_items, cp.median_price
FROM _category_targets t
JOIN _category_price cp ON cp.category = t.category
JOIN series s ON s.category = t.category AND s.ts = t.ts;
