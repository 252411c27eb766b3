-- Fresh planner statistics: Feast's point-in-time SQL joins CTEs over these tables, and with
-- the empty-table estimates of a first load PostgreSQL picks nested loops that run for minutes.
ANALYZE feature_user_hourly; ANALYZE feature_user_category_hourly; ANALYZE feature_item_hourly;
ANALYZE feature_query_hourly; ANALYZE user_features; ANALYZE item_features;
ANALYZE category_features; ANALYZE user_category_features; ANALYZE query_features;
ANALYZE user_session_features;
