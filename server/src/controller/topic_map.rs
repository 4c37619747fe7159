//! A map keyed by (topic, partition) whose lookups take `&str` and allocate nothing.
//!
//! Why: a `HashMap<(String, i32), V>` can only be queried with an owned `(String, i32)`, so
//! every partition lookup on the produce and fetch paths built a String. Two levels (topic,
//! then partition) let the outer map borrow the topic as `&str`; the topic String is
//! allocated once, when its first partition is inserted.

use std::collections::HashMap;

#[derive(Debug)]
pub struct TopicPartMap<V> {
    topics: HashMap<String, HashMap<i32, V>>,
    len: usize,
}

impl<V> Default for TopicPartMap<V> {
    fn default() -> Self {
        Self {
            topics: HashMap::new(),
            len: 0,
        }
    }
}

impl<V> TopicPartMap<V> {
    pub fn new() -> Self {
        Self::default()
    }

    /// The partitions of `topic`, created empty (allocating its name) when it has none.
    fn topic_mut(&mut self, topic: &str) -> &mut HashMap<i32, V> {
        if !self.topics.contains_key(topic) {
            self.topics.insert(topic.to_string(), HashMap::new());
        }
        self.topics
            .get_mut(topic)
            .expect("the topic's entry was inserted above")
    }

    pub fn get(&self, topic: &str, partition: i32) -> Option<&V> {
        self.topics.get(topic)?.get(&partition)
    }

    pub fn contains(&self, topic: &str, partition: i32) -> bool {
        self.get(topic, partition).is_some()
    }

    /// Inserts or replaces; returns the value it replaced.
    pub fn insert(&mut self, topic: &str, partition: i32, value: V) -> Option<V> {
        let parts = self.topic_mut(topic);
        let old = parts.insert(partition, value);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// The value of (topic, partition), inserting `make()` first when there is none.
    pub fn get_or_insert_with(
        &mut self,
        topic: &str,
        partition: i32,
        make: impl FnOnce() -> V,
    ) -> &mut V {
        if !self.contains(topic, partition) {
            self.insert(topic, partition, make());
        }
        self.topics
            .get_mut(topic)
            .and_then(|parts| parts.get_mut(&partition))
            .expect("the entry is present or was inserted above")
    }

    pub fn remove(&mut self, topic: &str, partition: i32) -> Option<V> {
        let parts = self.topics.get_mut(topic)?;
        let old = parts.remove(&partition)?;
        if parts.is_empty() {
            self.topics.remove(topic);
        }
        self.len -= 1;
        Some(old)
    }

    /// Removes every partition of `topic`, returning them in partition order.
    pub fn remove_topic(&mut self, topic: &str) -> Vec<(i32, V)> {
        let mut out: Vec<(i32, V)> = self.topics.remove(topic).into_iter().flatten().collect();
        self.len -= out.len();
        out.sort_unstable_by_key(|(p, _)| *p);
        out
    }

    /// The partitions of `topic` present (in no particular order).
    pub fn partitions_of<'a>(&'a self, topic: &str) -> impl Iterator<Item = i32> + 'a {
        self.topics
            .get(topic)
            .into_iter()
            .flat_map(|m| m.keys().copied())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, i32, &V)> {
        self.topics
            .iter()
            .flat_map(|(t, m)| m.iter().map(move |(p, v)| (t.as_str(), *p, v)))
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.topics.values().flat_map(|m| m.values())
    }

    /// Empties the map, returning every entry.
    pub fn drain(&mut self) -> Vec<(String, i32, V)> {
        self.len = 0;
        self.topics
            .drain()
            .flat_map(|(t, m)| m.into_iter().map(move |(p, v)| (t.clone(), p, v)))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_get_remove_and_counts() {
        let mut m = TopicPartMap::new();
        assert!(m.is_empty());
        assert_eq!(m.insert("a", 0, 10), None);
        assert_eq!(m.insert("a", 1, 11), None);
        assert_eq!(m.insert("b", 0, 20), None);
        assert_eq!(m.insert("a", 1, 12), Some(11));
        assert_eq!(m.len(), 3);
        assert_eq!(m.get("a", 1), Some(&12));
        assert_eq!(m.get("a", 2), None);
        assert_eq!(m.get("c", 0), None);
        assert!(m.contains("b", 0));
        let mut parts: Vec<i32> = m.partitions_of("a").collect();
        parts.sort_unstable();
        assert_eq!(parts, vec![0, 1]);
        assert_eq!(m.remove("b", 0), Some(20));
        assert_eq!(m.remove("b", 0), None);
        assert_eq!(m.len(), 2);
        *m.get_or_insert_with("c", 3, || 30) += 1;
        assert_eq!(*m.get_or_insert_with("c", 3, || 0), 31);
        assert_eq!(m.len(), 3);
        assert_eq!(m.remove_topic("a"), vec![(0, 10), (1, 12)]);
        assert_eq!(m.len(), 1);
        let mut all: Vec<_> = m.iter().map(|(t, p, v)| (t.to_string(), p, *v)).collect();
        all.sort();
        assert_eq!(all, vec![("c".to_string(), 3, 31)]);
        assert_eq!(m.drain(), vec![("c".to_string(), 3, 31)]);
        assert!(m.is_empty());
        assert_eq!(m.values().count(), 0);
    }
}
