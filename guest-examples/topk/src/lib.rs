//! Top-K per group, kept as state across intervals.
//!
//! Input lines are `group item score`. `parse` keys them by group; `top`
//! keeps, for every group, the `k` items with the highest score seen so far
//! (an item seen twice keeps its highest score), highest first, ties in item
//! order.

use dstream::Postcard;

/// Parameters of `top`.
#[derive(Debug, dstream::Params)]
pub struct TopK {
    /// How many items to keep per group.
    #[param(default = 3)]
    pub k: usize,
}

/// An item and its score, as `parse` emits them.
pub type Scored<'a> = Postcard<(&'a str, u64)>;

/// Parses `group item score` into (group, (item, score)).
#[dstream::map]
pub fn parse(line: &str) -> Result<(&str, Scored<'_>), String> {
    let mut f = line.split_ascii_whitespace();
    let (Some(group), Some(item), Some(score), None) = (f.next(), f.next(), f.next(), f.next())
    else {
        return Err(format!("expected `group item score`, got {line:?}"));
    };
    let score = score
        .parse()
        .map_err(|e| format!("score {score:?} is not a whole number: {e}"))?;
    Ok((group, Postcard((item, score))))
}

/// The state of a group: its top items, highest score first.
pub type Top = Postcard<Vec<(String, u64)>>;

/// Merges a group's new (item, score) pairs into its top `k`.
#[dstream::update_state]
pub fn top(_group: &str, values: Vec<Scored<'_>>, state: Option<Top>, p: &TopK) -> Option<Top> {
    let mut all: Vec<(String, u64)> = state.map(|s| s.0).unwrap_or_default();
    all.extend(
        values
            .into_iter()
            .map(|Postcard((i, s))| (i.to_string(), s)),
    );
    // Highest score per item, then highest first, ties by item.
    all.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    all.dedup_by(|later, first| later.0 == first.0);
    all.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    all.truncate(p.k);
    Some(Postcard(all))
}

/// Shows a group's leaders as text: `item:score item:score ...`.
#[dstream::map]
pub fn show(group: &str, top: Top) -> (&str, String) {
    let items: Vec<String> = top.0.iter().map(|(i, s)| format!("{i}:{s}")).collect();
    (group, items.join(" "))
}

dstream::plugin!(parse, top, show);
