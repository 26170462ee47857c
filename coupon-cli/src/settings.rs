//! One settings table per binary, read from flags, the environment and a TOML settings file.
//!
//! The table is the binary's clap `Parser` struct: each setting is one field with its flag, its
//! environment variable, its default and its help text. A settings file adds a layer under the
//! environment; its keys are the environment names in lower case without the `COUPON_` prefix
//! (`COUPON_HTTP_ADDR` is `http_addr`, `REDIS_URL` is `redis_url`). Precedence: flags, then the
//! environment, then the file, then the defaults. A key that names no setting is refused, so a
//! typo cannot fall back to a default unnoticed.
//!
//! The layer is clap's own: a file value is checked by the setting's value parser and then given
//! to clap as if it were a flag, only where neither a flag nor the environment set the setting.
//! A secret's setting may also come from a file it names (`<VARIABLE>_FILE`, `<key>_file`: see
//! the `secrets` module).

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command, CommandFactory, FromArgMatches};

use crate::declared::{CONFIG_ENV, as_flag, file_key, settings};
use crate::secrets;

/// The flag (and [`CONFIG_ENV`]) naming the settings file.
pub const CONFIG_FLAG: &str = "config";
/// The flag that prints the effective settings instead of running.
const PRINT_FLAG: &str = "print-config";
/// What a secret is printed as.
const REDACTED: &str = "<redacted>";

/// What the command line asked for.
#[derive(Debug)]
pub enum Parsed<T> {
    /// Run with these settings.
    Run(T),
    /// Print these effective settings (a settings file, secrets redacted) and exit.
    Print(String),
}

/// The binary's settings, or exits: after printing them for `--print-config` (status 0), or with
/// clap's message for a bad flag, variable, file or value (status 2).
pub fn parse<T: CommandFactory + FromArgMatches>() -> T {
    match parse_from::<T>(std::env::args_os()) {
        Ok(Parsed::Run(settings)) => settings,
        Ok(Parsed::Print(text)) => {
            print!("{text}");
            std::process::exit(0)
        }
        Err(err) => err.exit(),
    }
}

/// [`parse`] of the given arguments (the first is the program name), reading the environment
/// and the settings file as it would.
///
/// # Errors
///
/// A clap error naming the flag, variable or settings key at fault.
pub fn parse_from<T: CommandFactory + FromArgMatches>(
    args: impl IntoIterator<Item = impl Into<OsString>>,
) -> Result<Parsed<T>, clap::Error> {
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let print_flag = format!("--{PRINT_FLAG}");
    let printing = args.iter().skip(1).any(|a| *a == *print_flag);
    let mut command = with_file_flags(T::command());
    if printing {
        // Printing needs no subcommand, so `coupon-admin --print-config` answers too.
        command = command.subcommand_required(false);
    }
    let first = command.clone().try_get_matches_from(&args)?;
    let secrets = secrets::env_files(&command, &first)?;
    let from_env_files: Vec<&str> = secrets.set.iter().map(|(id, _)| id.as_str()).collect();
    let file = match first.get_one::<PathBuf>(CONFIG_FLAG) {
        Some(path) => Some((file_layer(&command, &first, path, &from_env_files)?, path)),
        None => None,
    };
    let matches = if secrets.flags.is_empty() && file.is_none() {
        first.clone()
    } else {
        let mut layered = args[..1].to_vec();
        layered.extend(secrets.flags.iter().cloned());
        if let Some((layer, _)) = &file {
            layered.extend(layer.flags.iter().cloned());
        }
        layered.extend_from_slice(&args[1..]);
        command
            .clone()
            .try_get_matches_from(layered)
            .map_err(|err| match &file {
                Some((layer, path)) => blame_file(&command, err, layer, path),
                None => err,
            })?
    };
    if printing {
        let sources = Sources {
            file: file
                .map(|(layer, _)| layer.settings.into_iter().map(|set| set.id).collect())
                .unwrap_or_default(),
            env_files: secrets.set,
        };
        return Ok(Parsed::Print(effective(&command, &matches, &sources)));
    }
    T::from_arg_matches(&matches).map(Parsed::Run)
}

/// Checks that the settings file at `path` names only settings of `T`, with values its flags
/// accept (the example files' test).
///
/// # Errors
///
/// The message the binary would stop with.
pub fn check_settings_file<T: CommandFactory + FromArgMatches>(path: &Path) -> Result<(), String> {
    let args = [
        OsString::from(T::command().get_name()),
        format!("--{CONFIG_FLAG}").into(),
        path.into(),
    ];
    parse_from::<T>(args)
        .map(drop)
        .map_err(|err| err.to_string())
}

/// The settings `T` declares at their declared defaults, whatever the environment holds: the
/// `Default` of a configuration that is its own settings table.
///
/// # Panics
///
/// When a declared default is refused by its own parser, or a setting without a default is
/// required: mistakes of the declaration, which every test of the binary meets first.
pub fn defaults<T: clap::Args + FromArgMatches>() -> T {
    let command = T::augment_args(Command::new("defaults")).mut_args(|arg| arg.env(None::<&str>));
    let matches = command
        .try_get_matches_from(["defaults"])
        .unwrap_or_else(|err| panic!("the declared defaults are refused: {err}"));
    T::from_arg_matches(&matches)
        .unwrap_or_else(|err| panic!("the declared defaults are refused: {err}"))
}

fn with_file_flags(command: Command) -> Command {
    command
        .arg(
            Arg::new(CONFIG_FLAG)
                .long(CONFIG_FLAG)
                .env(CONFIG_ENV)
                .value_name("FILE")
                .value_parser(clap::value_parser!(PathBuf))
                .global(true)
                .help("TOML settings file: keys are the environment names in lower case without COUPON_ (flags and the environment take precedence)"),
        )
        .arg(
            Arg::new(PRINT_FLAG)
                .long(PRINT_FLAG)
                .action(ArgAction::SetTrue)
                .global(true)
                .help("Print the effective settings as a settings file, secrets redacted, and exit"),
        )
}

/// The settings file's values that neither a flag nor the environment overrides.
struct Layer {
    /// The values, as flags.
    flags: Vec<OsString>,
    /// The settings they set.
    settings: Vec<FileSetting>,
}

/// A setting the settings file set.
struct FileSetting {
    id: String,
    /// Its key in the file.
    key: String,
    /// The flag its value was given to clap as.
    long: String,
}

/// The layer of the settings file at `path`, every key and value checked.
fn file_layer(
    command: &Command,
    matches: &ArgMatches,
    path: &Path,
    from_env_files: &[&str],
) -> Result<Layer, clap::Error> {
    let mut command = command.clone();
    let text = std::fs::read_to_string(path).map_err(|err| {
        command.error(
            ErrorKind::Io,
            format!("cannot read the settings file {}: {err}", path.display()),
        )
    })?;
    let table: toml::Table = text.parse().map_err(|err| {
        command.error(
            ErrorKind::InvalidValue,
            format!("the settings file {} is not TOML: {err}", path.display()),
        )
    })?;
    let mut layer = Layer {
        flags: Vec::new(),
        settings: Vec::new(),
    };
    for (key, value) in &table {
        let (arg, values) = file_setting(&command, &table, key, value, path)?;
        let id = arg.get_id().as_str();
        let overridden = from_env_files.contains(&id)
            || matches!(
                matches.value_source(id),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            );
        if !overridden {
            layer.flags.extend(values.iter().map(|v| as_flag(&arg, v)));
            layer.settings.push(FileSetting {
                id: id.to_owned(),
                key: key.clone(),
                long: arg.get_long().unwrap_or_default().to_owned(),
            });
        }
    }
    Ok(layer)
}

/// The setting the settings file at `path` names with `key`, and the values it gives it: those of
/// `value`, or, for a secret's `<key>_file`, the content of the file it names.
fn file_setting(
    command: &Command,
    table: &toml::Table,
    key: &str,
    value: &toml::Value,
    path: &Path,
) -> Result<(Arg, Vec<String>), clap::Error> {
    let mut command = command.clone();
    let from_path = key
        .strip_suffix(&secrets::FILE_SUFFIX.to_ascii_lowercase())
        .filter(|base| {
            settings(&command).any(|(arg, env)| secrets::is_secret(arg) && file_key(env) == *base)
        });
    if let Some(base) = from_path
        && table.contains_key(base)
    {
        return Err(command.error(
            ErrorKind::ArgumentConflict,
            format!(
                "settings `{base}` and `{key}` in {}: give the value or the file, not both",
                path.display()
            ),
        ));
    }
    let setting = from_path.unwrap_or(key);
    let found = settings(&command).find(|(_, env)| file_key(env) == setting);
    let Some(arg) = found.map(|(arg, _)| arg.clone()) else {
        let known: Vec<String> = settings(&command).map(|(_, env)| file_key(env)).collect();
        return Err(command.error(
            ErrorKind::UnknownArgument,
            format!(
                "unknown setting `{key}` in {}; the settings are: {} (and `<setting>_file` for \
                 a secret's)",
                path.display(),
                known.join(", ")
            ),
        ));
    };
    let values = match from_path {
        Some(_) => {
            let secret = secret_path(&command, path, key, value)?;
            vec![secrets::read(&command, &secret, key, &arg)?]
        }
        None => file_values(value).ok_or_else(|| {
            command.error(
                ErrorKind::InvalidValue,
                format!(
                    "setting `{key}` in {}: give a string, a number, a boolean, or a list or table of them",
                    path.display()
                ),
            )
        })?,
    };
    Ok((arg, values))
}

/// The path a settings file's `<key>_file` names: a string, relative to the settings file's
/// folder unless absolute.
fn secret_path(
    command: &Command,
    settings_file: &Path,
    key: &str,
    value: &toml::Value,
) -> Result<PathBuf, clap::Error> {
    let toml::Value::String(named) = value else {
        return Err(command.clone().error(
            ErrorKind::InvalidValue,
            format!(
                "setting `{key}` in {}: give the path of the file as a string",
                settings_file.display()
            ),
        ));
    };
    let folder = settings_file.parent().unwrap_or(Path::new("."));
    Ok(folder.join(named))
}

/// A file value as the texts a flag would carry: a list is one text per element (as a flag
/// given again), a table one `key=value` text per entry (librdkafka properties).
fn file_values(value: &toml::Value) -> Option<Vec<String>> {
    let scalar = |value: &toml::Value| match value {
        toml::Value::String(text) => Some(text.clone()),
        toml::Value::Integer(n) => Some(n.to_string()),
        toml::Value::Float(x) => Some(x.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    };
    match value {
        toml::Value::Array(items) => items.iter().map(scalar).collect(),
        toml::Value::Table(entries) => entries
            .iter()
            .map(|(k, v)| scalar(v).map(|v| format!("{k}={v}")))
            .collect(),
        value => scalar(value).map(|v| vec![v]),
    }
}

/// A refusal of a value that came from the settings file, told with the file's key rather than
/// the flag it was given to clap as.
fn blame_file(command: &Command, err: clap::Error, layer: &Layer, path: &Path) -> clap::Error {
    let Some(ContextValue::String(flag)) = err.get(ContextKind::InvalidArg) else {
        return err;
    };
    let blamed = layer.settings.iter().find(|set| {
        let long = format!("--{}", set.long);
        flag.starts_with(&format!("{long} ")) || *flag == long
    });
    let Some(FileSetting { key, .. }) = blamed else {
        return err;
    };
    let text = err.to_string();
    let detail = text
        .lines()
        .next()
        .unwrap_or_default()
        .trim_start_matches("error: ");
    command.clone().error(
        ErrorKind::InvalidValue,
        format!("setting `{key}` in {}: {detail}", path.display()),
    )
}

/// Where the settings came from, where clap's own account (a flag) does not say: the settings
/// file's layer and the secrets' files are given to clap as flags.
struct Sources {
    /// The ids of the settings the settings file set.
    file: Vec<String>,
    /// The ids of the secret settings the environment gave as files, with their variables.
    env_files: Vec<(String, String)>,
}

/// The effective settings as a settings file: every setting, with where its value came from;
/// secrets (settings whose values `--help` hides) redacted; unset ones commented out.
fn effective(command: &Command, matches: &ArgMatches, sources: &Sources) -> String {
    let mut out = format!(
        "# {} settings in effect: flags, then the environment, then the settings file, then the defaults\n",
        command.get_name()
    );
    for (arg, env) in settings(command) {
        let key = file_key(env);
        let id = arg.get_id().as_str();
        let raw: Vec<String> = matches
            .get_raw(id)
            .map(|values| values.map(|v| v.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        let env_file = sources.env_files.iter().find(|(set, _)| set == id);
        let source = match matches.value_source(id) {
            Some(ValueSource::CommandLine) if let Some((_, variable)) = env_file => {
                format!("environment ({variable})")
            }
            Some(ValueSource::CommandLine) if sources.file.iter().any(|f| f == id) => {
                "settings file".to_owned()
            }
            Some(ValueSource::CommandLine) => "flag".to_owned(),
            Some(ValueSource::EnvVariable) => "environment".to_owned(),
            Some(ValueSource::DefaultValue) => "default".to_owned(),
            _ => {
                let _ = writeln!(out, "# {key} is not set");
                continue;
            }
        };
        let url = raw.first().is_some_and(|v| v.contains("://"));
        let value = if is_list(arg) {
            let items: Vec<String> = raw.iter().map(|v| toml_string(&redact(v))).collect();
            format!("[{}]", items.join(", "))
        } else if arg.is_hide_env_values_set() && !url {
            toml_string(REDACTED)
        } else {
            toml_scalar(&redact(raw.first().map_or("", String::as_str)))
        };
        let _ = writeln!(out, "{key} = {value}  # {source}");
    }
    out
}

/// A value with the secrets it may carry redacted, for printing and for messages: the password
/// of a URL (`mysql://user:password@host`), and the value of a `key=value` property whose key
/// names a password, secret or private key (`sasl.password=…`).
pub fn redact(text: &str) -> String {
    if let Some((key, _)) = text.split_once('=')
        && !key.contains("://")
        && ["password", "secret", "key"]
            .iter()
            .any(|word| key.to_ascii_lowercase().contains(word))
    {
        return format!("{key}={REDACTED}");
    }
    // The last `@`, as a password may hold one.
    if let Some((scheme, rest)) = text.split_once("://")
        && let Some((userinfo, host)) = rest.rsplit_once('@')
        && let Some((user, _)) = userinfo.split_once(':')
    {
        return format!("{scheme}://{user}:{REDACTED}@{host}");
    }
    text.to_owned()
}

fn is_list(arg: &Arg) -> bool {
    arg.get_value_delimiter().is_some() || matches!(arg.get_action(), ArgAction::Append)
}

fn toml_scalar(text: &str) -> String {
    if text.parse::<i64>().is_ok() {
        text.to_owned()
    } else {
        toml_string(text)
    }
}

fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_values_keep_no_secret() {
        assert_eq!(
            redact("mysql://root:hunter2@db:3306/coupon"),
            "mysql://root:<redacted>@db:3306/coupon"
        );
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(redact("redis://u@host:6379"), "redis://u@host:6379");
        assert_eq!(redact("sasl.password=hunter2"), "sasl.password=<redacted>");
        assert_eq!(redact("ssl.key.pem=-----BEGIN"), "ssl.key.pem=<redacted>");
        assert_eq!(redact("linger.ms=5"), "linger.ms=5");
        assert_eq!(
            redact("mysql://root:p@ss:w/rd@db:3306/coupon"),
            "mysql://root:<redacted>@db:3306/coupon"
        );
        assert_eq!(
            redact("mysql://root:a=key@db/coupon"),
            "mysql://root:<redacted>@db/coupon"
        );
        assert_eq!(redact("nonsense"), "nonsense");
    }

    #[test]
    fn file_values_become_flag_texts() {
        let table: toml::Table = r#"
            a = "x"
            b = 5
            c = ["n1:1", "n2:2"]
            d = { "linger.ms" = 5, "acks" = "all" }
            e = [[1]]
        "#
        .parse()
        .unwrap();
        assert_eq!(file_values(&table["a"]), Some(vec!["x".to_owned()]));
        assert_eq!(file_values(&table["b"]), Some(vec!["5".to_owned()]));
        assert_eq!(
            file_values(&table["c"]),
            Some(vec!["n1:1".to_owned(), "n2:2".to_owned()])
        );
        assert_eq!(
            file_values(&table["d"]),
            Some(vec!["acks=all".to_owned(), "linger.ms=5".to_owned()])
        );
        assert_eq!(file_values(&table["e"]), None);
    }
}
