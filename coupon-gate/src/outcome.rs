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
    /// The campaign was archived ([`crate::Gate::archive`]); nothing changed.
    Archived,
    /// The campaign opens with a draw and its pre-queue is open: the user is in the queue (as
    /// many times as it applies, once) and learns at `draw_at` whether it was drawn.
    Queued {
        /// When the draw runs: the campaign's `opens_at`.
        draw_at: std::time::SystemTime,
    },
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
    /// The campaign was archived; nothing changed.
    Archived,
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
    /// The update would change how the campaign opens (race or draw, or when its queue opens)
    /// after it began taking applications, or move a draw's `opens_at` once the draw began;
    /// nothing changed.
    OpeningLocked,
    /// The new quota is below the `issued` users already admitted; nothing changed.
    QuotaBelowIssued {
        /// Users holding a coupon now.
        issued: u32,
    },
    /// The campaign was ended early ([`crate::Gate::close`]) and keeps its definition for good;
    /// nothing changed.
    Ended,
    /// The campaign was archived and its id is not reused; nothing changed.
    Archived,
}

/// The answer to [`crate::Gate::close`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Close {
    /// The campaign closed now, at this time by Redis's clock: every later application is
    /// answered `Closed`, and a draw that had not ended is cancelled (its queue removed; those
    /// it drew keep their coupons).
    Closed {
        /// When it closed.
        at: std::time::SystemTime,
    },
    /// The campaign's window had already ended, by itself or by an earlier close; nothing
    /// changed.
    AlreadyClosed {
        /// When it closed.
        at: std::time::SystemTime,
    },
    /// No campaign has this id; nothing changed.
    UnknownCampaign,
    /// The campaign was archived (it had closed before); nothing changed.
    Archived,
}

/// What [`crate::Gate::draw`] found or did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Draw {
    /// No campaign has this id, or it opens with a race.
    NoDraw,
    /// The draw is due in this long, by Redis's clock.
    NotDue {
        /// Until the campaign's `opens_at`.
        due_in: std::time::Duration,
    },
    /// One part of the draw ran, and more is to come (only from
    /// [`crate::Gate::draw_part`]).
    GoesOn {
        /// Users this part drew.
        winners: u32,
    },
    /// The draw has ended.
    Done {
        /// Users this call drew (all its parts).
        winners: u32,
        /// When this call ended the draw: how long it took from its first part (by any
        /// process) to its end. `None` when it had ended before.
        took: Option<std::time::Duration>,
    },
}
