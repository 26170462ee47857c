//! The settings table in the README, generated from the binary's own table and checked
//! against it by each binary's tests.

use std::fmt::Write as _;
use std::path::Path;

use clap::Command;

use crate::settings::{file_key, settings};

/// The environment variable that makes [`check_readme`] write the table instead of failing.
pub const WRITE_README_ENV: &str = "COUPON_WRITE_README";

/// The settings table of `command` in Markdown, for the README: setting (file key),
/// environment variable, flag, default and meaning.
pub fn markdown_table(command: &Command) -> String {
    let mut out = String::from(
        "| setting | environment | flag | default | meaning |\n|---|---|---|---|---|\n",
    );
    for (arg, env) in settings(command) {
        let default: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        let default = match default.as_slice() {
            [] => "none".to_owned(),
            values => format!("`{}`", values.join(",")),
        };
        let help = arg
            .get_long_help()
            .or(arg.get_help())
            .map(|help| help.to_string())
            .unwrap_or_default();
        let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
        let _ = writeln!(
            out,
            "| `{}` | `{env}` | `--{}` | {default} | {} |",
            file_key(env),
            arg.get_long().unwrap_or_default(),
            help.replace('|', "\\|")
        );
    }
    out
}

/// Checks that the README at `path` holds `command`'s settings table between
/// `<!-- settings: NAME -->` and `<!-- /settings -->` (NAME: the binary); with
/// [`WRITE_README_ENV`] set to 1, writes it there instead.
///
/// # Errors
///
/// No such section, or a table that differs: the message holds the table expected.
pub fn check_readme(command: &Command, path: &Path) -> Result<(), String> {
    let readme =
        std::fs::read_to_string(path).map_err(|err| format!("{}: {err}", path.display()))?;
    let open = format!("<!-- settings: {} -->\n", command.get_name());
    let close = "<!-- /settings -->";
    let start = readme
        .find(&open)
        .map(|at| at + open.len())
        .ok_or_else(|| format!("{} has no line {open:?}", path.display()))?;
    let end = readme[start..]
        .find(close)
        .map(|at| start + at)
        .ok_or_else(|| format!("{} has no {close:?} after {open:?}", path.display()))?;
    let table = markdown_table(command);
    if readme[start..end] == table {
        return Ok(());
    }
    if std::env::var(WRITE_README_ENV).is_ok_and(|v| v == "1") {
        let written = format!("{}{table}{}", &readme[..start], &readme[end..]);
        return std::fs::write(path, written).map_err(|err| format!("{}: {err}", path.display()));
    }
    Err(format!(
        "the {} settings table in {} is not the binary's; write it with {WRITE_README_ENV}=1 and the same test:\n{table}",
        command.get_name(),
        path.display()
    ))
}
