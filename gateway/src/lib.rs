//! gateway role
