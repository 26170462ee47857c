//! The gate's Lua scripts, each joined at compile time to the prelude they share, the codes they
//! answer, and the one way they are called.

use redis::Script;
use redis::aio::ConnectionLike;

use crate::Error;

/// A script file of this directory with `prelude.lua` in front of it.
macro_rules! with_prelude {
    ($file:literal) => {
        concat!(include_str!("prelude.lua"), include_str!($file))
    };
}

/// The scripts, with their SHA1 computed once.
pub(crate) struct Scripts {
    pub(crate) admit: Script,
    pub(crate) create: Script,
    pub(crate) release: Script,
    pub(crate) ack: Script,
    pub(crate) draw: Script,
    pub(crate) close: Script,
    pub(crate) archive: Script,
    /// Not a decision: SCAN routed to a campaign's node (see `scan.lua`).
    pub(crate) scan: Script,
}

impl Scripts {
    pub(crate) fn load() -> Self {
        Self {
            admit: Script::new(with_prelude!("admit.lua")),
            create: Script::new(with_prelude!("create.lua")),
            release: Script::new(with_prelude!("release.lua")),
            ack: Script::new(with_prelude!("ack.lua")),
            draw: Script::new(with_prelude!("draw.lua")),
            close: Script::new(with_prelude!("close.lua")),
            archive: Script::new(with_prelude!("archive.lua")),
            scan: Script::new(include_str!("scan.lua")),
        }
    }
}

/// The codes the scripts answer, as `prelude.lua` defines them.
pub(crate) mod code {
    // admit.lua, per user.
    pub(crate) const ADMITTED: i64 = 1;
    pub(crate) const DUPLICATE: i64 = 2;
    pub(crate) const SOLD_OUT: i64 = 3;
    pub(crate) const NOT_OPEN: i64 = 4;
    pub(crate) const CLOSED: i64 = 5;
    /// Also answered by release.lua and close.lua.
    pub(crate) const UNKNOWN_CAMPAIGN: i64 = 6;
    pub(crate) const QUEUED: i64 = 7;
    pub(crate) const DRAW_PENDING: i64 = 8;
    // release.lua.
    pub(crate) const NOT_ADMITTED: i64 = 0;
    pub(crate) const RELEASED: i64 = 1;
    // create.lua.
    pub(crate) const CREATED: i64 = 1;
    pub(crate) const UNCHANGED: i64 = 2;
    pub(crate) const UPDATED: i64 = 3;
    pub(crate) const QUOTA_BELOW_ISSUED: i64 = 4;
    pub(crate) const OPENING_LOCKED: i64 = 5;
    pub(crate) const ENDED: i64 = 6;
    // draw.lua.
    pub(crate) const NO_DRAW: i64 = 0;
    pub(crate) const DRAW_NOT_DUE: i64 = 1;
    pub(crate) const DRAW_GOES_ON: i64 = 2;
    pub(crate) const DRAW_DONE: i64 = 3;
    // close.lua (and UNKNOWN_CAMPAIGN).
    pub(crate) const CLOSED_NOW: i64 = 1;
    pub(crate) const ALREADY_CLOSED: i64 = 2;
    // archive.lua (and UNKNOWN_CAMPAIGN, ARCHIVED).
    pub(crate) const ARCHIVED_NOW: i64 = 1;
    pub(crate) const NOT_CLOSED: i64 = 3;
    pub(crate) const OUTBOX_PENDING: i64 = 4;
    pub(crate) const CHANGED: i64 = 5;
    /// Answered by admit.lua, release.lua, close.lua, create.lua and archive.lua.
    pub(crate) const ARCHIVED: i64 = 9;
}

/// Runs a script call. On NOSCRIPT, redis-rs loads the script and sends the call once more; if
/// the scripts were flushed again in between (a repeated `SCRIPT FLUSH`, a second failover),
/// that retry fails too, so it is repeated here, a few times. A NOSCRIPT answer means the script
/// did not run, so repeating the call is safe.
pub(crate) async fn run<C: ConnectionLike, T: redis::FromRedisValue>(
    call: &redis::ScriptInvocation<'_>,
    conn: &mut C,
) -> Result<T, Error> {
    let mut retries = 3;
    loop {
        match call.invoke_async(conn).await {
            Err(err)
                if retries > 0
                    && err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
            {
                retries -= 1;
            }
            result => return result.map_err(Error::from),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::code;

    /// The `local A, B = 1, 2` lines of the prelude, as (name, value) pairs.
    fn prelude_codes() -> Vec<(String, i64)> {
        let mut codes = Vec::new();
        for line in include_str!("prelude.lua").lines() {
            let Some((names, values)) = line
                .strip_prefix("local ")
                .and_then(|rest| rest.split_once(" = "))
            else {
                continue;
            };
            let values: Vec<i64> = match values.split(", ").map(str::parse).collect() {
                Ok(values) => values,
                Err(_) => continue,
            };
            let names: Vec<&str> = names.split(", ").collect();
            assert_eq!(names.len(), values.len(), "{line}");
            codes.extend(names.into_iter().map(str::to_owned).zip(values));
        }
        codes
    }

    #[test]
    fn rust_and_lua_agree_on_every_code() {
        let rust = [
            ("ADMITTED", code::ADMITTED),
            ("DUPLICATE", code::DUPLICATE),
            ("SOLD_OUT", code::SOLD_OUT),
            ("NOT_OPEN", code::NOT_OPEN),
            ("CLOSED", code::CLOSED),
            ("UNKNOWN_CAMPAIGN", code::UNKNOWN_CAMPAIGN),
            ("NOT_ADMITTED", code::NOT_ADMITTED),
            ("RELEASED", code::RELEASED),
            ("CREATED", code::CREATED),
            ("UNCHANGED", code::UNCHANGED),
            ("UPDATED", code::UPDATED),
            ("QUOTA_BELOW_ISSUED", code::QUOTA_BELOW_ISSUED),
            ("QUEUED", code::QUEUED),
            ("DRAW_PENDING", code::DRAW_PENDING),
            ("OPENING_LOCKED", code::OPENING_LOCKED),
            ("ENDED", code::ENDED),
            ("NO_DRAW", code::NO_DRAW),
            ("DRAW_NOT_DUE", code::DRAW_NOT_DUE),
            ("DRAW_GOES_ON", code::DRAW_GOES_ON),
            ("DRAW_DONE", code::DRAW_DONE),
            ("CLOSED_NOW", code::CLOSED_NOW),
            ("ALREADY_CLOSED", code::ALREADY_CLOSED),
            ("ARCHIVED_NOW", code::ARCHIVED_NOW),
            ("NOT_CLOSED", code::NOT_CLOSED),
            ("OUTBOX_PENDING", code::OUTBOX_PENDING),
            ("CHANGED", code::CHANGED),
            ("ARCHIVED", code::ARCHIVED),
        ];
        let lua = prelude_codes();
        assert_eq!(
            lua.len(),
            rust.len(),
            "every Lua code has a Rust twin: {lua:?}"
        );
        for (name, value) in rust {
            assert_eq!(
                lua.iter().find(|(n, _)| n == name).map(|(_, v)| *v),
                Some(value),
                "{name}"
            );
        }
    }
}
