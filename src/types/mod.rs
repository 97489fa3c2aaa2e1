//! The shared leaf types: ticket ids, statuses, priorities, locales, and a region's working-hours calendar.
//!
//! They are the vocabulary that every layer speaks (the config names a region's locale and SLA per priority,
//! mail classification guesses a locale and a priority, the store indexes by ticket id and status), so they
//! live at the bottom of the crate and import nothing from it: any module may use them without depending on
//! the desk's decisions. Their serde names are the names scripts see (README, *JSON*), so they change only
//! together with README.md. `desk::ticket` re-exports them under their old paths.

pub mod calendar;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use calendar::Calendar;

/// `<REGION>-<N>`, e.g. `JP-1042`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TicketId {
    pub region: String,
    pub number: u64,
}

impl TicketId {
    pub fn new(region: &str, number: u64) -> Self {
        TicketId {
            region: region.to_string(),
            number,
        }
    }
}

impl fmt::Display for TicketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.region, self.number)
    }
}

/// Why a string is not a ticket id.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a ticket id (expected REGION-NUMBER, like JP-1042)")]
pub struct BadTicketId(pub String);

impl FromStr for TicketId {
    type Err = BadTicketId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadTicketId(s.to_string());
        let (region, number) = s.trim().split_once('-').ok_or_else(bad)?;
        let region_ok =
            (2..=8).contains(&region.len()) && region.bytes().all(|b| b.is_ascii_uppercase());
        if !region_ok
            || number.is_empty()
            || !number.bytes().all(|b| b.is_ascii_digit())
            || number.len() > 18
        {
            return Err(bad());
        }
        Ok(TicketId {
            region: region.to_string(),
            number: number.parse().map_err(|_| bad())?,
        })
    }
}

impl Serialize for TicketId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TicketId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "lowercase")]
        pub enum $name { $($variant),+ }

        impl $name {
            /// Every value, in order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// The contract name (CLI and JSON).
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s.trim().to_ascii_lowercase().as_str() {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!(
                        "{other:?} is not one of: {}",
                        [$($text),+].join(", ")
                    )),
                }
            }
        }
    };
}

string_enum!(
    /// Where a ticket is in its life: received → in progress → waiting for the customer → resolved → closed;
    /// or `spam`: the receiving mail system's verdict (or an agent's `#spam`), kept aside, never answered.
    Status { New => "new", Open => "open", Pending => "pending", Resolved => "resolved", Closed => "closed", Spam => "spam" }
);
string_enum!(
    /// How soon the first response is due.
    Priority { Low => "low", Normal => "normal", High => "high", Urgent => "urgent" }
);
string_enum!(
    /// The language of the mail postdesk sends to a customer.
    Locale { En => "en", Ja => "ja", Ko => "ko", Zh => "zh" }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticket_ids_round_trip() {
        let id: TicketId = "JP-1042".parse().unwrap();
        assert_eq!(id, TicketId::new("JP", 1042));
        assert_eq!(id.to_string(), "JP-1042");
        for bad in [
            "jp-1",
            "J-1",
            "JP-",
            "JP1042",
            "JP-10a",
            "ABCDEFGHI-1",
            "JP-99999999999999999999",
        ] {
            assert!(bad.parse::<TicketId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn statuses_parse_case_insensitively_and_list_choices() {
        assert_eq!("Resolved".parse::<Status>().unwrap(), Status::Resolved);
        let err = "done".parse::<Status>().unwrap_err();
        assert!(
            err.contains("new, open, pending, resolved, closed"),
            "{err}"
        );
        assert_eq!(
            serde_json::to_string(&Status::Pending).unwrap(),
            "\"pending\""
        );
    }
}
