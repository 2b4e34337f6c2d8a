//! Forge hosted storage (placeholder).
