//! Block sync (in progress).
pub mod config;
pub mod engine;
pub use config::SyncConfig;
/// Errors of the sync layer.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// A configuration value is invalid.
    #[error("sync config: {key}: {reason}")]
    Config {
        /// The key.
        key: &'static str,
        /// Why.
        reason: String,
    },
}
