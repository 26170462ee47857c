//! The settings table in the README, generated from the binary's own table and checked
//! against it by each binary's tests, with the other checks those tests make of the table
//! ([`check_settings`]).

use std::fmt::Write as _;
use std::path::Path;

use clap::{Command, CommandFactory, FromArgMatches};

use crate::declared::{file_key, settings};
use crate::settings::check_settings_file;

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

/// The checks of a binary's settings table `T` that its tests run: every setting's flag is its
/// settings-file key ([`check_names`]), the README at `readme` holds its table
/// ([`check_readme`]), and the example settings file `example`, if the binary has one, names
/// only its settings, with values it accepts.
///
/// # Errors
///
/// The first check that failed, with what it expected.
pub fn check_settings<T: CommandFactory + FromArgMatches>(
    readme: &Path,
    example: Option<&Path>,
) -> Result<(), String> {
    let command = T::command();
    check_names(&command)?;
    check_readme(&command, readme)?;
    match example {
        Some(example) => check_settings_file::<T>(example),
        None => Ok(()),
    }
}

/// Checks that each setting of `command` has one name: its flag is its settings-file key with
/// `-` for `_` (`--http-addr` and `http_addr` for `COUPON_HTTP_ADDR`). A flag renamed to follow
/// this keeps its old name as a hidden alias.
///
/// # Errors
///
/// Every setting whose flag and key differ.
pub fn check_names(command: &Command) -> Result<(), String> {
    let differ: Vec<String> = settings(command)
        .filter_map(|(arg, env)| {
            let long = arg.get_long().unwrap_or_default();
            let key = file_key(env);
            (long.replace('-', "_") != key).then(|| format!("--{long} (settings file key {key})"))
        })
        .collect();
    if differ.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{}: flags that are not their settings file key: {}",
            command.get_name(),
            differ.join(", ")
        ))
    }
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
