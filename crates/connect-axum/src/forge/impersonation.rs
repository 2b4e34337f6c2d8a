//! Offline user impersonation (placeholder).
