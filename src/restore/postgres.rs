//! PostgreSQL restore strategies (being written).
