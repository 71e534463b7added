//! Storage: model files and the alert database.
