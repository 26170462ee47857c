//! What the gate answers: ordinary outcomes, including every kind of "no".
//!
//! A duplicate application or a sold-out campaign is not a failure of the gate; it is the gate
//! doing its job. These values are therefore returned in `Ok`, and [`crate::Error`] is kept
//! for a Redis that cannot be reached or answers something unexpected.

/// The answer to one application.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The user got a coupon: slot `seq`, from 1 to the quota. The admission is recorded in the
    /// campaign's outbox in the same atomic step.
    Admitted {
        /// The slot taken; no other user of the campaign holds it.
        seq: u32,
    },
    /// The user already holds a coupon of this campaign (slot `seq`); nothing changed.
    Duplicate {
        /// The slot the user holds.
        seq: u32,
    },
    /// Every coupon is taken; nothing changed.
    SoldOut,
    /// The campaign's window has not opened yet; nothing changed.
    NotOpen,
    /// The campaign's window has closed; nothing changed.
    Closed,
    /// No campaign has this id; nothing changed.
    UnknownCampaign,
}

impl Outcome {
    /// Whether this application took a slot.
    pub fn is_admitted(self) -> bool {
        matches!(self, Self::Admitted { .. })
    }
}

/// The answer to [`crate::Gate::release`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Release {
    /// The user's slot `seq` is free again, and a release entry is in the outbox.
    Released {
        /// The slot given back.
        seq: u32,
    },
    /// The user holds no slot (never admitted, or released before); nothing changed.
    NotAdmitted,
    /// No campaign has this id; nothing changed.
    UnknownCampaign,
}

/// The answer to [`crate::Gate::create`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Create {
    /// The campaign did not exist and now does.
    Created,
    /// The campaign exists with exactly this definition; nothing changed.
    Unchanged,
    /// The campaign existed with another definition, which is now replaced. Users already
    /// admitted keep their slots.
    Updated,
    /// The new quota is below the `issued` users already admitted; nothing changed.
    QuotaBelowIssued {
        /// Users holding a coupon now.
        issued: u32,
    },
}
