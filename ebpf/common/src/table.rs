//! The binding tables the program reads without a helper call.
//!
//! A kernel hash map costs the program a call into the map code per packet (hashing, a bucket
//! walk and a `memcmp`), which is more than half of the program's own time on a CPU whose
//! kernel makes every return dear (SRSO's "safe RET"). An array map's lookup is inlined by the
//! verifier into a bounds check and an address computation. So each binding direction is an
//! array of buckets: a key hashes ([`bucket_index`]) to one bucket of [`SLOTS_PER_BUCKET`]
//! slots, and the program compares the key with each slot. A key whose bucket is full lives in
//! the direction's hash map instead (the overflow), which the program looks up only after a
//! miss in the bucket, so no binding is ever refused for want of a slot and a crowded bucket
//! costs only the hash map's lookup.
//!
//! The loader writes a bucket while the program may read it on another CPU, and an array
//! update copies the bucket byte by byte with no lock. Each slot therefore carries a sequence
//! byte, as in a seqlock:
//!
//! - the loader changes a slot in three updates: the sequence made odd (nothing else changed),
//!   then the new key and value (the sequence still odd), then the sequence made even again;
//!   a removal is the first update alone;
//! - the program reads the sequence, the key and the value it needs, then the sequence again,
//!   and uses the slot only if both reads are the same even number. A slot read while it
//!   changed counts as a miss: the frame passes to the userspace relay, which is always right.
//!
//! This relies on the loads of one run and the stores of one update being seen in program
//! order, which x86-64 (total store order) gives; a weakly ordered CPU would need acquire loads
//! in the program. A one-byte sequence cannot tear; it wraps after 128 changes of one slot,
//! which no run of the program (well under a microsecond) spans while each change takes three
//! system calls.

use crate::{AllocationPeer, ClientChannel};

/// Slots in one bucket; a key sits in its bucket's first free slot.
pub const SLOTS_PER_BUCKET: usize = 4;

/// Buckets per direction (a power of two): 65,536 slots, as many as the overflow map's entries.
pub const BUCKETS: u32 = 16384;

/// One binding in a bucket. `seq` odd: being written, or removed. A key whose discriminating
/// field is zero (channel number 0, allocation port 0) is no binding: every slot of a fresh
/// array is such a key.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Slot<K, V> {
    pub seq: u8,
    pub reserved: [u8; 3],
    pub key: K,
    pub value: V,
}

/// One element of a bucket array.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Bucket<K, V> {
    pub slots: [Slot<K, V>; SLOTS_PER_BUCKET],
}

/// A `CHANNELS` bucket: (client, port, channel) -> its route. 4 x 64 bytes.
pub type ChannelBucket = Bucket<ClientChannel, crate::ChannelRoute>;

/// An `ALLOCATIONS` bucket: (allocation port, peer, port) -> (client, port, channel). 4 x 44
/// bytes.
pub type AllocationBucket = Bucket<AllocationPeer, ClientChannel>;

/// A 20-byte key as its ten 16-bit words, in memory order (each as the machine reads it; both
/// sides run on the same machine, so the bucket agrees).
pub type KeyWords = [u16; 10];

/// The bucket of a key. Three 64-bit multiplications and a final mix: the program computes it
/// per packet, so it must be cheap, and it need not resist a chosen-key attack: a full bucket
/// only sends its further keys to the overflow map.
#[inline(always)]
pub const fn bucket_index(words: &KeyWords) -> u32 {
    let a = words[0] as u64
        | (words[1] as u64) << 16
        | (words[2] as u64) << 32
        | (words[3] as u64) << 48;
    let b = words[4] as u64
        | (words[5] as u64) << 16
        | (words[6] as u64) << 32
        | (words[7] as u64) << 48;
    let c = words[8] as u64 | (words[9] as u64) << 16;
    let mut h = a.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ b.wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
        ^ c.wrapping_mul(0x1656_67B1_9E37_79F9);
    h ^= h >> 29;
    h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    (h >> 32) as u32 & (BUCKETS - 1)
}

/// What the tables need of a key.
pub trait TableKey: Copy + Eq {
    /// Whether this is a binding's key rather than an empty slot's (zero) key.
    fn is_binding(&self) -> bool;
    /// The key's words, for [`bucket_index`]: the loader's and the program's, one definition.
    fn words(&self) -> KeyWords;
}

/// A 16-byte address as eight words in memory order.
#[inline(always)]
fn ip_words(ip: &[u8; 16]) -> [u16; 8] {
    let mut words = [0; 8];
    for (word, bytes) in words.iter_mut().zip(ip.chunks_exact(2)) {
        *word = u16::from_ne_bytes([bytes[0], bytes[1]]);
    }
    words
}

impl TableKey for ClientChannel {
    fn is_binding(&self) -> bool {
        self.channel != 0
    }

    #[inline(always)]
    fn words(&self) -> KeyWords {
        let [a, b, c, d, e, f, g, h] = ip_words(&self.client_ip);
        [a, b, c, d, e, f, g, h, self.client_port, self.channel]
    }
}

impl TableKey for AllocationPeer {
    fn is_binding(&self) -> bool {
        self.allocation_port != 0
    }

    #[inline(always)]
    fn words(&self) -> KeyWords {
        let [a, b, c, d, e, f, g, h] = ip_words(&self.peer_ip);
        [self.allocation_port, a, b, c, d, e, f, g, h, self.peer_port]
    }
}

impl<K: TableKey, V> Slot<K, V> {
    /// Whether the slot holds a binding a reader may use.
    pub fn is_live(&self) -> bool {
        self.seq & 1 == 0 && self.key.is_binding()
    }
}
