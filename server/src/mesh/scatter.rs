//! Split by owning shard, send, join, put back in request order: the one shape every API that
//! spans partitions or groups on several shards has (Produce, Fetch, ListOffsets,
//! DeleteRecords, OffsetForLeaderEpoch, the multi-group APIs, consumer lag).
//!
//! The pure parts ([`split_by_owner`], [`in_request_order`], [`first_place_by_key`]) hold the
//! ordering rules and are unit-tested here; [`send_each`] and [`join`] are the placing and
//! answering phases around [`Shard::send`], so a request's pieces are placed (in ascending
//! shard order) before the handler returns its answer future (see `crate::api`).

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::rc::Rc;

use futures::future::{self, LocalBoxFuture};

use crate::mesh::messages::{ShardReq, ShardResp};
use crate::mesh::shard::Shard;

/// An answer on its way back from one shard.
pub type Answer = LocalBoxFuture<'static, ShardResp>;

/// Splits `items` by owning shard: `(shard, items)` with shards ascending and each shard's
/// items in the order they came. Empty input gives no groups.
pub fn split_by_owner<T>(
    items: impl IntoIterator<Item = T>,
    mut owner: impl FnMut(&T) -> usize,
) -> Vec<(usize, Vec<T>)> {
    let mut by: BTreeMap<usize, Vec<T>> = BTreeMap::new();
    for item in items {
        by.entry(owner(&item)).or_default().push(item);
    }
    by.into_iter().collect()
}

/// Places one request per group on its shard, in the groups' order, and returns the answers'
/// futures in that order (each resolves to `ShardResp::Failed` if the peer is gone).
pub async fn send_each<G>(
    shard: &Rc<Shard>,
    groups: impl IntoIterator<Item = (usize, G)>,
    mut make: impl FnMut(G) -> ShardReq,
) -> Vec<Answer> {
    let groups = groups.into_iter();
    let mut answers = Vec::with_capacity(groups.size_hint().0);
    for (target, g) in groups {
        answers.push(shard.send(target, make(g)).await);
    }
    answers
}

/// Waits for every answer and concatenates what `take` gets out of each, in answer order
/// (an answer `take` does not recognise contributes nothing).
pub async fn join<R>(
    answers: Vec<Answer>,
    mut take: impl FnMut(ShardResp) -> Option<Vec<R>>,
) -> Vec<R> {
    let mut out = Vec::new();
    for r in future::join_all(answers).await {
        if let Some(rs) = take(r) {
            out.extend(rs);
        }
    }
    out
}

/// Puts per-shard answers back in request order: `parts` are (positions in the request,
/// answers) with one answer per position; a position left without one gets `missing(position)`.
pub fn in_request_order<T>(
    n: usize,
    parts: Vec<(Vec<usize>, Vec<T>)>,
    mut missing: impl FnMut(usize) -> T,
) -> Vec<T> {
    let mut slots: Vec<Option<T>> = (0..n).map(|_| None).collect();
    for (positions, answers) in parts {
        for (pos, a) in positions.into_iter().zip(answers) {
            if let Some(slot) = slots.get_mut(pos) {
                *slot = Some(a);
            }
        }
    }
    slots
        .into_iter()
        .enumerate()
        .map(|(i, a)| a.unwrap_or_else(|| missing(i)))
        .collect()
}

/// Answers keyed for a request that names each key at most once in the normal case: the last
/// answer for a key is kept, and [`FirstPlace::take`] hands it out once, to the first place in
/// request order that asks; a repeated key's later places get `None` (the caller's error).
pub fn first_place_by_key<K: Hash + Eq, R>(
    answers: impl IntoIterator<Item = R>,
    key_of: impl Fn(&R) -> K,
) -> FirstPlace<K, R> {
    FirstPlace(answers.into_iter().map(|r| (key_of(&r), r)).collect())
}

/// See [`first_place_by_key`].
pub struct FirstPlace<K, R>(HashMap<K, R>);

impl<K: Hash + Eq, R> FirstPlace<K, R> {
    /// The answer for `key`, if there is one not yet taken.
    pub fn take(&mut self, key: &K) -> Option<R> {
        self.0.remove(key)
    }

    /// Sets (or replaces) the answer for `key`.
    pub fn set(&mut self, key: K, answer: R) {
        self.0.insert(key, answer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_groups_by_owner_in_ascending_shard_and_request_order() {
        let items = vec![("a", 3), ("b", 1), ("c", 3), ("d", 0), ("e", 1), ("a", 3)];
        let groups = split_by_owner(items, |&(_, owner)| owner);
        assert_eq!(
            groups,
            vec![
                (0, vec![("d", 0)]),
                (1, vec![("b", 1), ("e", 1)]),
                // Duplicates stay, in their order.
                (3, vec![("a", 3), ("c", 3), ("a", 3)]),
            ]
        );
        let none: Vec<(usize, Vec<u8>)> = split_by_owner(Vec::<u8>::new(), |_| 0);
        assert!(none.is_empty());
    }

    #[test]
    fn request_order_is_restored_and_gaps_are_filled() {
        // Positions 0..5 split over two shards; position 4 got no answer.
        let parts = vec![
            (vec![1, 3], vec!["b", "d"]),
            (vec![0, 2, 4], vec!["a", "c"]),
        ];
        let out = in_request_order(5, parts, |_| "missing");
        assert_eq!(out, vec!["a", "b", "c", "d", "missing"]);
        assert!(in_request_order(0, Vec::<(Vec<usize>, Vec<u8>)>::new(), |_| 0).is_empty());
        // A position out of range is dropped, not a panic.
        assert_eq!(
            in_request_order(1, vec![(vec![7, 0], vec![1, 2])], |_| 0),
            vec![2]
        );
    }

    #[test]
    fn split_then_restore_round_trips_with_duplicates() {
        let ids = ["x", "y", "x", "z", "y"];
        let owner = |id: &&str| id.len() + (id.as_bytes()[0] as usize % 3);
        let groups = split_by_owner(ids.iter().enumerate(), |(_, id)| owner(id));
        let parts = groups
            .into_iter()
            .map(|(_, g)| {
                let positions = g.iter().map(|(i, _)| *i).collect();
                let answers = g.iter().map(|(_, id)| id.to_uppercase()).collect();
                (positions, answers)
            })
            .collect();
        let out = in_request_order(ids.len(), parts, |_| String::new());
        assert_eq!(out, vec!["X", "Y", "X", "Z", "Y"]);
    }

    #[test]
    fn keyed_answers_go_once_to_the_first_place_last_answer_winning() {
        let answers = vec![("t", 0, 10), ("t", 1, 11), ("t", 0, 12)];
        let mut got = first_place_by_key(answers, |&(t, p, _)| (t, p));
        // The partition asked twice: the first place gets the last answer, the second none.
        assert_eq!(got.take(&("t", 0)), Some(("t", 0, 12)));
        assert_eq!(got.take(&("t", 0)), None);
        assert_eq!(got.take(&("t", 1)), Some(("t", 1, 11)));
        assert_eq!(got.take(&("u", 0)), None);
        got.set(("u", 0), ("u", 0, 1));
        assert_eq!(got.take(&("u", 0)), Some(("u", 0, 1)));
        let mut empty = first_place_by_key(Vec::<(u8, u8)>::new(), |&(k, _)| k);
        assert_eq!(empty.take(&0), None);
    }
}
