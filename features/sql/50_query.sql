-- Query snapshots at T for each (normalised) query searched or clicked from in the hour
-- before T, kept only for frequent queries (searches_30d >= min_query_searches):
-- which categories its searchers click, and its labelled intent when one exists.
-- Later snapshots within 30 days of a late event come from the query's active hours, not from
-- its stored rows: a snapshot that was below min_query_searches has no row, and the late
-- event may lift it over.
CREATE TEMP TABLE _query_targets ON COMMIT DROP AS
SELECT query, hour_ts + interval '1 hour' AS ts FROM _query_hours
UNION
SELECT h.query, h.hour_ts + interval '1 hour'
FROM feature_query_hourly h
JOIN (SELECT query, min(hour_ts) AS m FROM _query_hours GROUP BY query) a USING (query)
WHERE h.hour_ts >= a.m AND h.hour_ts < a.m + interval '30 days';

DELETE FROM query_features f USING _query_targets t
WHERE f.query = t.query AND f.event_timestamp = t.ts;

WITH cat AS (
    SELECT t.query, t.ts, h.category, sum(h.searches) AS s, sum(h.clicks) AS c
    FROM _query_targets t
    JOIN feature_query_hourly h ON h.query = t.query
                               AND h.hour_ts >= t.ts - interval '30 days' AND h.hour_ts < t.ts
    GROUP BY t.query, t.ts, h.category
),
ranked AS (
    SELECT *, row_number() OVER (PARTITION BY query, ts ORDER BY c DESC, category) AS rk,
              sum(c) OVER (PARTITION BY query, ts) AS tot
    FROM cat WHERE category <> ''
),
agg AS (
    SELECT query, ts, sum(s) AS searches, sum(c) AS clicks,
           count(*) FILTER (WHERE category <> '' AND c > 0) AS ncat
    FROM cat GROUP BY query, ts
),
tops AS (
    SELECT query, ts,
           max(category) FILTER (WHERE rk = 1) AS c1,
           max(c::float8 / nullif(tot, 0)) FILTER (WHERE rk = 1) AS s1,
           max(category) FILTER (WHERE rk = 2) AS c2,
           max(c::float8 / nullif(tot, 0)) FILTER (WHERE rk = 2) AS s2
    FROM ranked GROUP BY query, ts
),
labels AS (
    SELECT DISTINCT ON (q) q AS query, intent, category
    FROM (SELECT lower(btrim(query)) AS q, intent, category, count(*) OVER
                 (PARTITION BY lower(btrim(query)), intent) AS n
          FROM labelled_queries) l
    ORDER BY q, n DESC, intent, category
)
INSERT INTO query_features (query, event_timestamp, searches_30d, query_clicks_30d,
                            query_ctr_30d, n_clicked_categories, q_top_category_1,
                            q_top_category_1_share, q_top_category_2, q_top_category_2_share,
                            labelled_intent, labelled_category)
SELECT a.query, a.ts, a.searches, a.clicks,
       coalesce(a.clicks::float8 / nullif(a.searches, 0), 0), a.ncat,
       t.c1, coalesce(t.s1, 0), t.c2, coalesce(t.s2, 0), l.intent, l.category
FROM agg a
LEFT JOIN tops t USING (query, ts)
LEFT JOIN labels l USING (query)
WHERE a.searches >= %(min_query_searches)s;
