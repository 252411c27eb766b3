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

WITH agg AS (
    SELECT t.item_id, t.ts,
           coalesce(sum(h.impressions) FILTER (WHERE h.hour_ts >= t.ts - interval '7 days'), 0) AS i7d,
           coalesce(sum(h.clicks)      FILTER (WHERE h.hour_ts >= t.ts - interval '7 days'), 0) AS c7d,
           coalesce(sum(h.clicks + h.views + h.add_to_carts + h.purchases)
                    FILTER (WHERE h.hour_ts >= t.ts - interval '7 days'), 0) AS n7d,
           sum(h.impressions) AS i30d, sum(h.clicks) AS c30d, sum(h.views) AS v30d,
           sum(h.add_to_carts) AS a30d, sum(h.purchases) AS p30d,
           sum(h.clicks + h.views + h.add_to_carts + h.purchases) AS n30d
    FROM _item_targets t
    JOIN feature_item_hourly h ON h.item_id = t.item_id
                              AND h.hour_ts >= t.ts - interval '30 days' AND h.hour_ts < t.ts
    GROUP BY t.item_id, t.ts
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

-- Category snapshots at T for each category with an item touched in the hour before T.
CREATE TEMP TABLE _category_targets ON COMMIT DROP AS
SELECT DISTINCT i.category, t.ts
FROM _item_targets t JOIN items i USING (item_id);

DELETE FROM category_features f USING _category_targets t
WHERE f.category = t.category AND f.event_timestamp = t.ts;

INSERT INTO category_features (category, event_timestamp, cat_impressions_30d, cat_clicks_30d,
                               cat_ctr_smoothed_30d, cat_purchases_30d, cat_n_items, cat_median_price)
SELECT t.category, t.ts,
       coalesce(sum(h.impressions), 0), coalesce(sum(h.clicks), 0),
       (coalesce(sum(h.clicks), 0) + %(ctr_prior)s * %(ctr_prior_strength)s)
           / (coalesce(sum(h.impressions), 0) + %(ctr_prior_strength)s),
       coalesce(sum(h.purchases), 0),
       max(cp.n_items), max(cp.median_price)
FROM _category_targets t
JOIN _category_price cp ON cp.category = t.category
LEFT JOIN items i ON i.category = t.category
LEFT JOIN feature_item_hourly h ON h.item_id = i.item_id
                               AND h.hour_ts >= t.ts - interval '30 days' AND h.hour_ts < t.ts
GROUP BY t.category, t.ts;
