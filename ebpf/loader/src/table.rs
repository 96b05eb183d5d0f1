//! One direction of the bindings in the kernel: a bucket array the program reads without a
//! helper call, and an overflow hash map for keys whose bucket is full
//! (`relay_xdp_common::table` has the layout and the sequence protocol this writes by).
//!
//! The maps change only through this struct, so it keeps what it wrote: `installed` answers
//! from that without a system call, and each change writes only the bucket it touches. The
//! reads that check the kernel (`get`, `entries`, `is_empty`) read the maps themselves.

use std::collections::{BTreeMap, BTreeSet};

use aya::{
    Pod,
    maps::{Array, HashMap, MapData, MapError},
};
use relay_xdp_common::table::{Bucket, TableKey, bucket_index};

pub(crate) struct BindingTable<K: Pod, V: Pod>
where
    Bucket<K, V>: Pod,
{
    buckets: Array<MapData, Bucket<K, V>>,
    overflow: HashMap<MapData, K, V>,
    /// Every bucket this table wrote, as it wrote it last; the others are as the kernel made
    /// them (all zero, no binding).
    written: BTreeMap<u32, Bucket<K, V>>,
    /// The entries of `overflow`.
    overflowed: BTreeMap<K, V>,
    /// Buckets written since `is_empty` last found the table empty: the only ones that can hold
    /// a binding then.
    recent: BTreeSet<u32>,
}

impl<K, V> BindingTable<K, V>
where
    K: TableKey + Pod + Ord,
    V: Pod + PartialEq,
    Bucket<K, V>: Pod + Default,
{
    pub(crate) fn new(
        buckets: Array<MapData, Bucket<K, V>>,
        overflow: HashMap<MapData, K, V>,
    ) -> Self {
        Self {
            buckets,
            overflow,
            written: BTreeMap::new(),
            overflowed: BTreeMap::new(),
            recent: BTreeSet::new(),
        }
    }

    fn written(&self, index: u32) -> Bucket<K, V> {
        self.written.get(&index).copied().unwrap_or_default()
    }

    /// The value installed at `key`, as this table wrote it (no system call).
    pub(crate) fn installed(&self, key: &K) -> Option<V> {
        let bucket = self.written(bucket_index(&key.words()));
        live_value(&bucket, key).or_else(|| self.overflowed.get(key).copied())
    }

    /// The value the kernel's maps hold at `key`: the bucket, then the overflow.
    pub(crate) fn get(&self, key: &K) -> Result<Option<V>, MapError> {
        let bucket = self.buckets.get(&bucket_index(&key.words()), 0)?;
        if let Some(value) = live_value(&bucket, key) {
            return Ok(Some(value));
        }
        match self.overflow.get(key, 0) {
            Ok(value) => Ok(Some(value)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Installs `value` at `key`, in place if the key is installed, else in the first free slot
    /// of its bucket, else in the overflow map. Nothing is written when the key already holds
    /// exactly this value.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Result<(), MapError> {
        let index = bucket_index(&key.words());
        let bucket = self.written(index);
        let slots = &bucket.slots;
        if let Some(slot) = slots.iter().position(|s| s.is_live() && s.key == key) {
            if slots[slot].value == value {
                return Ok(());
            }
            return self.write_slot(index, bucket, slot, key, value);
        }
        if let Some(current) = self.overflowed.get(&key) {
            if *current == value {
                return Ok(());
            }
            return self.overflow_insert(key, value);
        }
        match slots.iter().position(|slot| !slot.is_live()) {
            Some(free) => self.write_slot(index, bucket, free, key, value),
            None => self.overflow_insert(key, value),
        }
    }

    fn overflow_insert(&mut self, key: K, value: V) -> Result<(), MapError> {
        self.overflow.insert(key, value, 0)?;
        self.overflowed.insert(key, value);
        Ok(())
    }

    /// Removes `key`; whether it was installed.
    pub(crate) fn remove(&mut self, key: &K) -> Result<bool, MapError> {
        let index = bucket_index(&key.words());
        let mut bucket = self.written(index);
        if let Some(slot) = bucket
            .slots
            .iter()
            .position(|slot| slot.is_live() && slot.key == *key)
        {
            // The sequence made odd is the removal: readers skip the slot from then on.
            bucket.slots[slot].seq = bucket.slots[slot].seq.wrapping_add(1);
            self.set(index, bucket)?;
            return Ok(true);
        }
        if self.overflowed.contains_key(key) {
            self.overflow.remove(key)?;
            self.overflowed.remove(key);
            return Ok(true);
        }
        Ok(false)
    }

    /// Writes one slot of `bucket` (as last written) in the three steps readers rely on: the
    /// sequence made odd, then the new key and value, then the sequence made even.
    fn write_slot(
        &mut self,
        index: u32,
        mut bucket: Bucket<K, V>,
        slot: usize,
        key: K,
        value: V,
    ) -> Result<(), MapError> {
        if bucket.slots[slot].seq & 1 == 0 {
            bucket.slots[slot].seq = bucket.slots[slot].seq.wrapping_add(1);
            self.set(index, bucket)?;
        }
        bucket.slots[slot].key = key;
        bucket.slots[slot].value = value;
        self.set(index, bucket)?;
        bucket.slots[slot].seq = bucket.slots[slot].seq.wrapping_add(1);
        self.set(index, bucket)
    }

    fn set(&mut self, index: u32, bucket: Bucket<K, V>) -> Result<(), MapError> {
        self.buckets.set(index, bucket, 0)?;
        self.written.insert(index, bucket);
        self.recent.insert(index);
        Ok(())
    }

    /// Every installed key, as this table wrote it (no system call).
    pub(crate) fn installed_keys(&self) -> Vec<K> {
        let in_buckets = self.written.values().flat_map(|bucket| bucket.slots.iter());
        in_buckets
            .filter(|slot| slot.is_live())
            .map(|slot| slot.key)
            .chain(self.overflowed.keys().copied())
            .collect()
    }

    /// Every entry the kernel's maps hold (the written buckets and the overflow map), in no
    /// particular order.
    pub(crate) fn entries(&self) -> Result<Vec<(K, V)>, MapError> {
        let mut entries = Vec::new();
        for index in self.written.keys() {
            let bucket = self.buckets.get(index, 0)?;
            let live = bucket.slots.iter().filter(|slot| slot.is_live());
            entries.extend(live.map(|slot| (slot.key, slot.value)));
        }
        for entry in self.overflow.iter() {
            entries.push(entry?);
        }
        Ok(entries)
    }

    /// Whether the kernel's maps hold no binding: the buckets written since the table was last
    /// found empty are read back, and the overflow map is walked.
    pub(crate) fn is_empty(&mut self) -> Result<bool, MapError> {
        for index in &self.recent {
            let bucket = self.buckets.get(index, 0)?;
            if bucket.slots.iter().any(|slot| slot.is_live()) {
                return Ok(false);
            }
        }
        if self.overflow.keys().next().transpose()?.is_some() {
            return Ok(false);
        }
        self.recent.clear();
        Ok(true)
    }

    /// Keys held in the overflow map.
    pub(crate) fn overflow_len(&self) -> usize {
        self.overflowed.len()
    }
}

/// The value of the live slot holding `key`.
fn live_value<K: TableKey, V: Copy>(bucket: &Bucket<K, V>, key: &K) -> Option<V> {
    bucket
        .slots
        .iter()
        .find(|slot| slot.is_live() && slot.key == *key)
        .map(|slot| slot.value)
}
