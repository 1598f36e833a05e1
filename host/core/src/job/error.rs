//! Errors in a job file, each naming the line and the field.

use std::fmt;
use std::ops::Range;

/// An error in a job file: where it is (line, column, dotted field path) and
/// what is wrong.
///
/// Displays as `LINE:COLUMN: FIELD: MESSAGE`, so a front end only prefixes the
/// file name to get the familiar `job.toml:12:5: streams.counts.map: ...`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobError {
    /// 1-based line (0 when the error has no place, such as an empty file).
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// The field, as a dotted path (`streams.counts.running_reduce`).
    pub field: String,
    /// What is wrong, and where useful what would be right.
    pub message: String,
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}:{}: {}", self.line, self.column, self.message)
        } else {
            write!(
                f,
                "{}:{}: {}: {}",
                self.line, self.column, self.field, self.message
            )
        }
    }
}

impl std::error::Error for JobError {}

/// Turns byte spans into lines and columns.
#[derive(Debug, Clone)]
pub(crate) struct Locator {
    /// Byte offset where each line starts.
    starts: Vec<usize>,
    text: String,
}

impl Locator {
    pub(crate) fn new(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Self {
            starts,
            text: text.to_string(),
        }
    }

    /// Line and column (both 1-based) of byte `offset`.
    pub(crate) fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.starts.partition_point(|&s| s <= offset);
        let start = self.starts[line - 1];
        let column = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count())
            + 1;
        (line, column)
    }

    pub(crate) fn error(
        &self,
        span: Range<usize>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> JobError {
        let (line, column) = self.position(span.start);
        JobError {
            line,
            column,
            field: field.into(),
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Locator;

    #[test]
    fn positions_are_one_based_lines_and_character_columns() {
        let l = Locator::new("ab\nçd\n\nx");
        assert_eq!(l.position(0), (1, 1));
        assert_eq!(l.position(1), (1, 2));
        assert_eq!(l.position(3), (2, 1));
        assert_eq!(l.position(5), (2, 2)); // after the two-byte ç
        assert_eq!(l.position(7), (3, 1));
        assert_eq!(l.position(8), (4, 1));
        assert_eq!(l.position(99), (4, 2));
    }
}
