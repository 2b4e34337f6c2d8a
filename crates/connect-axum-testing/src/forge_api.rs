//! Fakes of Forge APIs (placeholder).
