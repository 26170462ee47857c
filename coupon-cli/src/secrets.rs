//! Secrets from files, as Docker and Kubernetes hand them over: a setting that can hold a secret
//! (one whose value `--help` hides: a token, a key, a URL or a Kafka property that may carry a
//! password) may instead be given as the path of a file that holds its value, in the variable
//! `<VARIABLE>_FILE` (`COUPON_JWT_SECRET_FILE`) or under the settings file key `<key>_file`
//! (`jwt_secret_file`). The file's trailing line ends are dropped; a list setting takes one item
//! a line (or comma separated). Giving a setting both ways at one layer is refused, naming both.

use std::ffi::OsString;
use std::path::Path;

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{Arg, ArgMatches, Command};

use crate::declared::{as_flag, settings};

/// What a variable or settings file key adds to a secret setting's name to name its file.
pub(crate) const FILE_SUFFIX: &str = "_FILE";

/// Whether `arg` may hold a secret, and so may be given from a file.
pub(crate) fn is_secret(arg: &Arg) -> bool {
    arg.is_hide_env_values_set()
}

/// The secret settings the environment gives as files (`<VARIABLE>_FILE`).
pub(crate) struct EnvFiles {
    /// Their values, as flags for clap.
    pub(crate) flags: Vec<OsString>,
    /// The ids of the settings they set, with the variable each came from.
    pub(crate) set: Vec<(String, String)>,
}

/// Reads the files the environment names for the secret settings of `command` that no flag set.
///
/// # Errors
///
/// A setting given both as `<VARIABLE>` and `<VARIABLE>_FILE`, or a file that cannot be read.
pub(crate) fn env_files(command: &Command, matches: &ArgMatches) -> Result<EnvFiles, clap::Error> {
    let mut found = EnvFiles {
        flags: Vec::new(),
        set: Vec::new(),
    };
    for (arg, env) in settings(command).filter(|(arg, _)| is_secret(arg)) {
        let variable = format!("{env}{FILE_SUFFIX}");
        let Some(path) = std::env::var_os(&variable).filter(|path| !path.is_empty()) else {
            continue;
        };
        let id = arg.get_id().as_str();
        match matches.value_source(id) {
            Some(ValueSource::CommandLine) => continue,
            Some(ValueSource::EnvVariable) => {
                return Err(command.clone().error(
                    ErrorKind::ArgumentConflict,
                    format!(
                        "both {env} and {variable} are set: give the value or the file, not both"
                    ),
                ));
            }
            _ => {}
        }
        let value = read(command, Path::new(&path), &variable, arg)?;
        found.flags.push(as_flag(arg, &value));
        found.set.push((id.to_owned(), variable));
    }
    Ok(found)
}

/// The value of secret setting `arg` held by the file at `path`, which `whose` (a variable or a
/// settings file key) names: its text without trailing line ends; for a list setting, its lines
/// joined as one comma-separated value.
///
/// # Errors
///
/// A file that cannot be read, or is not text; the message names `whose` and the path, never
/// the content.
pub(crate) fn read(
    command: &Command,
    path: &Path,
    whose: &str,
    arg: &Arg,
) -> Result<String, clap::Error> {
    let text = std::fs::read_to_string(path).map_err(|err| {
        command.clone().error(
            ErrorKind::Io,
            format!("cannot read {whose} ({}): {err}", path.display()),
        )
    })?;
    let text = text.trim_end_matches(['\r', '\n']);
    if arg.get_value_delimiter().is_some() {
        let items: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .collect();
        return Ok(items.join(","));
    }
    Ok(text.to_owned())
}
