//! The running count of page views from the D-Streams paper.
//!
//! Each input line is one page view whose first field is the URL
//! (`/index.html 203.0.113.9 Mozilla/5.0`). `url_one` keys it by URL with a
//! count of 1, `merge` adds counts (a running count keeps their sum as state)
//! and `unmerge` takes counts off again for a sliding window.

/// Keys a page view by its URL (the first field of the line), counting 1.
#[dstream::map]
pub fn url_one(line: &str) -> Result<(&str, u64), &'static str> {
    match line.split_ascii_whitespace().next() {
        Some(url) => Ok((url, 1)),
        None => Err("empty line: a page view starts with its URL"),
    }
}

/// Adds two counts of one URL.
#[dstream::reduce]
pub fn merge(a: u64, b: u64) -> u64 {
    a + b
}

/// Takes the counts of views leaving a window off its total.
#[dstream::inverse]
pub fn unmerge(current: u64, leaving: u64) -> u64 {
    current - leaving
}

dstream::plugin!(url_one, merge, unmerge);

#[cfg(test)]
mod tests {
    use dstream::{Batch, Kind};

    #[test]
    fn counts_views_per_url() {
        let lines = Batch::from_values(["/a x", "/b y", "/a z"]);
        let ones = super::PLUGIN
            .call(Kind::Map, "url_one", &[], &lines)
            .unwrap();
        let counts = super::PLUGIN
            .call(Kind::Reduce, "merge", &[], &ones)
            .unwrap();
        assert_eq!(
            counts.decode::<&str, u64>().unwrap(),
            [("/a", 2), ("/b", 1)]
        );
    }

    #[test]
    fn an_empty_line_is_an_error_naming_the_record() {
        let lines = Batch::from_values(["/a", ""]);
        let e = super::PLUGIN
            .call(Kind::Map, "url_one", &[], &lines)
            .unwrap_err();
        assert_eq!(e.record, Some(1));
    }
}
