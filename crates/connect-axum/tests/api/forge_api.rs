//! Forge API clients against the kit fakes (placeholder).
