//! One side of a scripted TCP connection. The client and the resource responder both use it:
//! each acts when the runner says so (open, send data, close, reset) and answers what it
//! receives exactly as docs/harness.md says, so every segment is predictable.

/// TCP flags the script uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flags {
    pub syn: bool,
    pub ack: bool,
    pub fin: bool,
    pub rst: bool,
    pub psh: bool,
}

impl Flags {
    /// The flags as tcpdump writes them: `S`, `F`, `R`, `P`, `.` for ACK (`[S.]` is a SYN-ACK).
    pub fn letters(self) -> String {
        [
            (self.syn, 'S'),
            (self.fin, 'F'),
            (self.rst, 'R'),
            (self.psh, 'P'),
            (self.ack, '.'),
        ]
        .into_iter()
        .filter_map(|(set, letter)| set.then_some(letter))
        .collect()
    }
}

/// A segment to send: flags, sequence and acknowledgement numbers, payload length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub flags: Flags,
    pub seq: u32,
    pub ack: u32,
    pub payload: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSide {
    initial_seq: u32,
    /// Next sequence number to send.
    seq: u32,
    /// Next sequence number expected from the other side.
    ack: u32,
    fin_sent: bool,
}

impl TcpSide {
    /// The client's side (its SYN carries 1000).
    pub fn client() -> Self {
        Self::new(1000)
    }

    /// The resource's side (its SYN-ACK carries 5000).
    pub fn resource() -> Self {
        Self::new(5000)
    }

    fn new(initial_seq: u32) -> Self {
        Self {
            initial_seq,
            seq: initial_seq,
            ack: 0,
            fin_sent: false,
        }
    }

    fn ack_flags() -> Flags {
        Flags {
            ack: true,
            ..Flags::default()
        }
    }

    /// The opening SYN (sent again unchanged for a retransmission).
    pub fn syn(&mut self) -> Segment {
        self.seq = self.initial_seq + 1;
        Segment {
            flags: Flags {
                syn: true,
                ..Flags::default()
            },
            seq: self.initial_seq,
            ack: 0,
            payload: 0,
        }
    }

    pub fn data(&mut self, bytes: u16) -> Segment {
        let segment = Segment {
            flags: Flags {
                psh: true,
                ack: true,
                ..Flags::default()
            },
            seq: self.seq,
            ack: self.ack,
            payload: bytes,
        };
        self.seq = self.seq.wrapping_add(u32::from(bytes));
        segment
    }

    pub fn fin(&mut self) -> Segment {
        self.fin_sent = true;
        let segment = Segment {
            flags: Flags {
                fin: true,
                ack: true,
                ..Flags::default()
            },
            seq: self.seq,
            ack: self.ack,
            payload: 0,
        };
        self.seq = self.seq.wrapping_add(1);
        segment
    }

    pub fn rst(&mut self) -> Segment {
        Segment {
            flags: Flags {
                rst: true,
                ack: true,
                ..Flags::default()
            },
            seq: self.seq,
            ack: self.ack,
            payload: 0,
        }
    }

    /// A pure ACK of everything received.
    pub fn ack(&self) -> Segment {
        Segment {
            flags: Self::ack_flags(),
            seq: self.seq,
            ack: self.ack,
            payload: 0,
        }
    }

    /// What this side answers to `received`, per the script: SYN -> SYN-ACK, SYN-ACK -> ACK,
    /// data -> ACK, FIN -> FIN-ACK (or the final ACK if we closed first), else nothing.
    pub fn answer(&mut self, received: Segment) -> Option<Segment> {
        let flags = received.flags;
        if flags.rst {
            return None;
        }
        if flags.syn && !flags.ack {
            self.ack = received.seq.wrapping_add(1);
            self.seq = self.initial_seq + 1;
            return Some(Segment {
                flags: Flags {
                    syn: true,
                    ack: true,
                    ..Flags::default()
                },
                seq: self.initial_seq,
                ack: self.ack,
                payload: 0,
            });
        }
        if flags.syn && flags.ack {
            self.ack = received.seq.wrapping_add(1);
            return Some(self.ack());
        }
        if flags.fin {
            self.ack = received
                .seq
                .wrapping_add(u32::from(received.payload))
                .wrapping_add(1);
            return Some(if self.fin_sent {
                self.ack()
            } else {
                self.fin()
            });
        }
        if received.payload > 0 {
            self.ack = received.seq.wrapping_add(u32::from(received.payload));
            return Some(self.ack());
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_data_and_close_follow_the_script() {
        let mut client = TcpSide::client();
        let mut resource = TcpSide::resource();
        let syn = client.syn();
        let syn_ack = resource.answer(syn).expect("SYN-ACK");
        assert!(syn_ack.flags.syn && syn_ack.flags.ack && syn_ack.ack == 1001);
        let ack = client.answer(syn_ack).expect("ACK");
        assert_eq!((ack.seq, ack.ack), (1001, 5001));
        assert_eq!(resource.answer(ack), None);
        let data = client.data(100);
        let data_ack = resource.answer(data).expect("ACK of data");
        assert_eq!(data_ack.ack, 1101);
        let fin = resource.fin();
        let fin_ack = client.answer(fin).expect("FIN-ACK");
        assert!(fin_ack.flags.fin);
        let last = resource.answer(fin_ack).expect("final ACK");
        assert!(!last.flags.fin && last.flags.ack);
        assert_eq!(client.answer(last), None);
    }
}
