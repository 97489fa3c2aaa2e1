//! Business hours: the clock SLA targets run on. The [`Calendar`] type lives in [`crate::types::calendar`]
//! (the config parses it, the desk's timers use it); it is re-exported here under its old path.

pub use crate::types::calendar::*;
