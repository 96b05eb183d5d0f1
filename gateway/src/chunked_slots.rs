//! Numbered slots kept in fixed-size chunks, for the flow table.
//!
//! A `Vec` grows by doubling: at 100,000 open flows it held room for 131,072 (a third more
//! memory than the flows), and each growth copied every flow and briefly held both copies.
//! Chunks are allocated one at a time, exactly sized, and never move: growing copies nothing,
//! and at most one chunk stands empty.

/// Slots per chunk.
const CHUNK: usize = 1024;

#[derive(Debug)]
pub(crate) struct ChunkedSlots<T> {
    chunks: Vec<Box<[Option<T>]>>,
    /// Slots handed out so far (the rest of the last chunk is unused room).
    len: usize,
}

impl<T> Default for ChunkedSlots<T> {
    fn default() -> Self {
        Self {
            chunks: Vec::new(),
            len: 0,
        }
    }
}

impl<T> ChunkedSlots<T> {
    /// Slots handed out so far, empty ones included.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn get(&self, index: usize) -> Option<&T> {
        self.slot(index)?.as_ref()
    }

    pub(crate) fn get_mut(&mut self, index: usize) -> Option<&mut T> {
        self.slot_mut(index)?.as_mut()
    }

    /// The slot `index` (empty or not), if it was handed out.
    pub(crate) fn slot_mut(&mut self, index: usize) -> Option<&mut Option<T>> {
        if index >= self.len {
            return None;
        }
        Some(&mut self.chunks[index / CHUNK][index % CHUNK])
    }

    fn slot(&self, index: usize) -> Option<&Option<T>> {
        if index >= self.len {
            return None;
        }
        Some(&self.chunks[index / CHUNK][index % CHUNK])
    }

    /// Puts `value` in a new slot at the end and returns its index.
    pub(crate) fn push(&mut self, value: T) -> usize {
        let index = self.len;
        if index / CHUNK == self.chunks.len() {
            let chunk: Vec<Option<T>> = std::iter::repeat_with(|| None).take(CHUNK).collect();
            self.chunks.push(chunk.into_boxed_slice());
        }
        self.chunks[index / CHUNK][index % CHUNK] = Some(value);
        self.len += 1;
        index
    }

    /// Every value, in slot order.
    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.chunks
            .iter_mut()
            .flat_map(|chunk| chunk.iter_mut().flatten())
    }

    /// Whether slot `index` holds a value.
    pub(crate) fn is_occupied(&self, index: usize) -> bool {
        self.get(index).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_across_chunks_keep_their_values_and_empty_slots_stay_numbered() {
        let mut slots = ChunkedSlots::default();
        for value in 0..(2 * CHUNK + 5) {
            assert_eq!(slots.push(value), value);
        }
        assert_eq!(slots.len(), 2 * CHUNK + 5);
        assert_eq!(slots.chunks.len(), 3, "one chunk of room at most");
        assert_eq!(slots.get(CHUNK), Some(&CHUNK));
        assert_eq!(slots.get(2 * CHUNK + 5), None, "past the end");

        *slots.slot_mut(CHUNK + 1).unwrap() = None;
        assert!(!slots.is_occupied(CHUNK + 1));
        assert!(slots.is_occupied(CHUNK + 2));
        *slots.get_mut(3).unwrap() += 100;
        let values: Vec<usize> = slots.values_mut().map(|v| *v).collect();
        assert_eq!(values.len(), 2 * CHUNK + 4);
        assert_eq!(values[3], 103);
        assert!(!values.contains(&(CHUNK + 1)));
    }
}
