//! Why a dataset could not be loaded, always naming the file and, where there is one, the JSON field.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{dir}: no dataset found (looked for {looked_for})")]
    NoDataset { dir: PathBuf, looked_for: String },
    #[error("{file}: cannot read: {source}")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The parser's message carries the line and column.
    #[error("{file}: malformed JSON: {message}")]
    Json { file: PathBuf, message: String },
    /// A field that is missing, of the wrong type, or out of range, e.g. `frames[3].transform_matrix`.
    #[error("{file}: {field}: {message}")]
    Field { file: PathBuf, field: String, message: String },
    #[error("{file}: {field}: image not found (tried {tried})")]
    MissingImage { file: PathBuf, field: String, tried: String },
    #[error("{file}: cannot decode image: {message}")]
    Decode { file: PathBuf, message: String },
    #[error("{file}: image is {width}x{height}, but {expected}")]
    ImageSize { file: PathBuf, width: u32, height: u32, expected: String },
    #[error("{file}: no usable frames: {message}")]
    NoFrames { file: PathBuf, message: String },
    #[error("load options: {field} {message}")]
    Options { field: &'static str, message: String },
}
