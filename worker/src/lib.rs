//! worker role
