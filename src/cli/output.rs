//! Rendering results for people (tables, CSV, JSON).
