//! Link cells: the one fixed-size unit every circuit message travels in.
//!
//! Every cell on a link is exactly [`CELL_LEN`] bytes,
//! `circuit id (u32 BE) ‖ command (u8) ‖ body`, whatever it carries, so an
//! observer of the (TLS-encrypted) link learns nothing from sizes. Decoding
//! is strict: every byte the format says is zero must be zero, so no field
//! can be abused as a covert channel between colluding relays.
//!
//! Two ways in:
//! * [`Cell::decode`] / [`Cell::encode`] build an owned, validated [`Cell`]
//!   for the control path (CREATE, BREAK, CREDIT…);
//! * [`CellRef`] / [`CellMut`] and [`CellReader`] are zero-copy views for the
//!   data path, where a relay peeks at the header, removes or adds its relay
//!   layer over the body in place and rewrites the circuit id, without ever
//!   building an owned cell.
//!
//! PROTOCOL.md §4 describes every byte; its vectors are checked below.

mod circ_alloc;
mod view;

pub use circ_alloc::CircuitIdAllocator;
pub use view::{peek_header, CellMut, CellReader, CellRef};

use crate::{CircuitId, DecodeError};
use std::num::NonZeroU16;

/// Every cell on a link, in bytes. Chosen by measurement (PROTOCOL.md §4):
/// large enough that per-cell costs are amortised, small enough that a
/// control message or a short piece-protocol message wastes little padding.
pub const CELL_LEN: usize = 1024;
/// `circuit id (4) ‖ command (1)`.
pub const CELL_HEADER_LEN: usize = 5;
/// What follows the header.
pub const CELL_BODY_LEN: usize = CELL_LEN - CELL_HEADER_LEN;
/// Length of the tracking code a CREATE cell carries. Equal to
/// `onion::CODE_LEN`; kept as its own constant so the link layer treats the
/// code as opaque bytes and does not depend on the onion module.
pub const CREATE_CODE_LEN: usize = 656;
const _: () = assert!(CREATE_CODE_LEN == crate::onion::CODE_LEN);

/// The command byte of a cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Command {
    /// Link-level filler (circuit id 0); dropped by the receiver.
    Padding = 0,
    /// Open a circuit: carries a tracking code.
    Create = 1,
    /// The circuit is open end to end.
    Confirm = 2,
    /// Relay-layer ciphertext, opaque to the link.
    Data = 3,
    /// Tear the circuit down, with a reason.
    Break = 4,
    /// Acknowledges a BREAK; both ends may now reuse the circuit id.
    BreakAck = 5,
    /// Flow control: grants more DATA cells to the sender of the DATA.
    Credit = 6,
}

impl Command {
    /// The command for a wire byte; unknown bytes are malformed.
    pub fn from_byte(b: u8) -> Result<Command, DecodeError> {
        Ok(match b {
            0 => Command::Padding,
            1 => Command::Create,
            2 => Command::Confirm,
            3 => Command::Data,
            4 => Command::Break,
            5 => Command::BreakAck,
            6 => Command::Credit,
            _ => return Err(DecodeError::Malformed("unknown cell command")),
        })
    }

    /// Short fixed name, safe as a metric label.
    pub fn name(self) -> &'static str {
        match self {
            Command::Padding => "padding",
            Command::Create => "create",
            Command::Confirm => "confirm",
            Command::Data => "data",
            Command::Break => "break",
            Command::BreakAck => "break_ack",
            Command::Credit => "credit",
        }
    }
}

/// Why a circuit was broken. A fixed set, so it can be a metric label and
/// carries no free-form (possibly identifying) text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum BreakReason {
    /// No particular reason (normal close).
    None = 0,
    /// The peer violated the protocol on this circuit.
    Protocol = 1,
    /// A link further along the circuit died.
    LinkLost = 2,
    /// The circuit was not confirmed in time.
    SetupTimeout = 3,
    /// The circuit was destroyed locally (shutdown, download finished).
    Destroyed = 4,
    /// The tracking code was refused (bad MAC, replay, expired, unknown NID).
    Refused = 5,
    /// The hop has no room for another circuit.
    Overloaded = 6,
}

impl BreakReason {
    /// The reason for a wire byte; unknown bytes are malformed.
    pub fn from_byte(b: u8) -> Result<BreakReason, DecodeError> {
        Ok(match b {
            0 => BreakReason::None,
            1 => BreakReason::Protocol,
            2 => BreakReason::LinkLost,
            3 => BreakReason::SetupTimeout,
            4 => BreakReason::Destroyed,
            5 => BreakReason::Refused,
            6 => BreakReason::Overloaded,
            _ => return Err(DecodeError::Malformed("unknown break reason")),
        })
    }

    /// Short fixed name, safe as a metric label.
    pub fn name(self) -> &'static str {
        match self {
            BreakReason::None => "none",
            BreakReason::Protocol => "protocol",
            BreakReason::LinkLost => "link_lost",
            BreakReason::SetupTimeout => "setup_timeout",
            BreakReason::Destroyed => "destroyed",
            BreakReason::Refused => "refused",
            BreakReason::Overloaded => "overloaded",
        }
    }
}

/// What a cell says. Large bodies are boxed so a `Cell` stays small to move.
#[derive(Clone, PartialEq, Eq)]
pub enum CellMsg {
    /// Link padding; only valid on circuit id 0.
    Padding,
    /// A tracking code, opaque here (see `onion`).
    Create(Box<[u8; CREATE_CODE_LEN]>),
    /// The circuit is open.
    Confirm,
    /// A whole relay-layer-encrypted body.
    Data(Box<[u8; CELL_BODY_LEN]>),
    /// Tear down, with a reason.
    Break(BreakReason),
    /// Teardown acknowledged.
    BreakAck,
    /// Additional DATA cells the receiver of this cell may send on this
    /// circuit in the opposite direction. Zero would be meaningless, so the
    /// type rules it out.
    Credit(NonZeroU16),
}

impl CellMsg {
    /// The command byte this message is sent with.
    pub fn command(&self) -> Command {
        match self {
            CellMsg::Padding => Command::Padding,
            CellMsg::Create(_) => Command::Create,
            CellMsg::Confirm => Command::Confirm,
            CellMsg::Data(_) => Command::Data,
            CellMsg::Break(_) => Command::Break,
            CellMsg::BreakAck => Command::BreakAck,
            CellMsg::Credit(_) => Command::Credit,
        }
    }
}

/// Bodies may hold tracking codes and ciphertext: print only the shape.
impl std::fmt::Debug for CellMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CellMsg::Break(r) => write!(f, "Break({})", r.name()),
            CellMsg::Credit(n) => write!(f, "Credit({n})"),
            other => f.write_str(other.command().name()),
        }
    }
}

/// One decoded cell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cell {
    /// The circuit, local to this link; [`CircuitId::LINK`] for PADDING.
    pub circ: CircuitId,
    /// The message.
    pub msg: CellMsg,
}

impl Cell {
    /// A cell for `circ`.
    pub fn new(circ: CircuitId, msg: CellMsg) -> Cell {
        Cell { circ, msg }
    }

    /// Write the whole cell into `out`, zero padding included.
    pub fn encode(&self, out: &mut [u8; CELL_LEN]) {
        out[..4].copy_from_slice(&self.circ.0.to_be_bytes());
        out[4] = self.msg.command() as u8;
        let body = &mut out[CELL_HEADER_LEN..];
        body.fill(0);
        match &self.msg {
            CellMsg::Padding | CellMsg::Confirm | CellMsg::BreakAck => {}
            CellMsg::Create(code) => body[..CREATE_CODE_LEN].copy_from_slice(&code[..]),
            CellMsg::Data(data) => body.copy_from_slice(&data[..]),
            CellMsg::Break(reason) => body[0] = *reason as u8,
            CellMsg::Credit(n) => body[..2].copy_from_slice(&n.get().to_be_bytes()),
        }
    }

    /// Append the whole cell to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let mut buf = [0u8; CELL_LEN];
        self.encode(&mut buf);
        out.extend_from_slice(&buf);
    }

    /// The encoded cell as a fresh array.
    pub fn to_bytes(&self) -> [u8; CELL_LEN] {
        let mut buf = [0u8; CELL_LEN];
        self.encode(&mut buf);
        buf
    }

    /// Decode the cell at the front of `buf`, returning it and the bytes used
    /// (always [`CELL_LEN`]). Fewer than `CELL_LEN` bytes is `NeedMore`.
    pub fn decode(buf: &[u8]) -> Result<(Cell, usize), DecodeError> {
        let cell = CellRef::new(buf)?;
        Ok((cell.to_cell()?, CELL_LEN))
    }
}

/// `Malformed` unless every byte of `bytes` is zero (strict padding).
pub(crate) fn require_zero(bytes: &[u8], what: &'static str) -> Result<(), DecodeError> {
    if bytes.iter().any(|&b| b != 0) {
        Err(DecodeError::Malformed(what))
    } else {
        Ok(())
    }
}

/// Validate a whole cell given its parts (shared by the owned decoder and
/// the views).
pub(crate) fn parse_cell(
    circ: CircuitId,
    command: u8,
    body: &[u8; CELL_BODY_LEN],
) -> Result<Cell, DecodeError> {
    let command = Command::from_byte(command)?;
    match (command, circ == CircuitId::LINK) {
        (Command::Padding, false) => return Err(DecodeError::Malformed("padding on a circuit id")),
        (Command::Padding, true) => {}
        (_, true) => return Err(DecodeError::Malformed("circuit command on circuit id 0")),
        (_, false) => {}
    }
    let msg = match command {
        Command::Padding => {
            require_zero(body, "nonzero padding")?;
            CellMsg::Padding
        }
        Command::Create => {
            let (code, rest) = body.split_at(CREATE_CODE_LEN);
            require_zero(rest, "nonzero padding after tracking code")?;
            let mut boxed = Box::new([0u8; CREATE_CODE_LEN]);
            boxed.copy_from_slice(code);
            CellMsg::Create(boxed)
        }
        Command::Confirm => {
            require_zero(body, "nonzero confirm body")?;
            CellMsg::Confirm
        }
        Command::Data => CellMsg::Data(Box::new(*body)),
        Command::Break => {
            require_zero(&body[1..], "nonzero padding after break reason")?;
            CellMsg::Break(BreakReason::from_byte(body[0])?)
        }
        Command::BreakAck => {
            require_zero(body, "nonzero break-ack body")?;
            CellMsg::BreakAck
        }
        Command::Credit => {
            require_zero(&body[2..], "nonzero padding after credit")?;
            let n = u16::from_be_bytes([body[0], body[1]]);
            CellMsg::Credit(NonZeroU16::new(n).ok_or(DecodeError::Malformed("zero credit"))?)
        }
    };
    Ok(Cell { circ, msg })
}

#[cfg(test)]
mod tests;
