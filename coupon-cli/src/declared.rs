//! What a binary's settings table declares, read from its clap `Command`: which arguments are
//! settings, each setting's settings file key, and how a value from a layer under the command
//! line is handed to clap. The settings layers (`settings`), the secrets' files (`secrets`) and
//! the README table (`table`) all read the table through this.

use std::ffi::OsString;

use clap::{Arg, Command};

/// The environment variable naming the settings file.
pub const CONFIG_ENV: &str = "COUPON_CONFIG";

/// The settings file's key of a setting: its environment name in lower case, without `COUPON_`.
pub fn file_key(env: &str) -> String {
    let lower = env.to_ascii_lowercase();
    lower.strip_prefix("coupon_").unwrap_or(&lower).to_owned()
}

/// The settings of `command`: every argument read from the environment, but the settings file's
/// own name.
pub(crate) fn settings(command: &Command) -> impl Iterator<Item = (&Arg, &str)> {
    command.get_arguments().filter_map(|arg| {
        let env = arg.get_env()?.to_str()?;
        (env != CONFIG_ENV).then_some((arg, env))
    })
}

/// A value of setting `arg` as the flag clap is given it as, from a layer under the command line
/// (the settings file, a secret's file).
pub(crate) fn as_flag(arg: &Arg, value: &str) -> OsString {
    let long = arg.get_long().expect("every setting has a long flag");
    OsString::from(format!("--{long}={value}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_keys_are_environment_names_without_the_prefix() {
        assert_eq!(file_key("COUPON_HTTP_ADDR"), "http_addr");
        assert_eq!(file_key("REDIS_URL"), "redis_url");
        assert_eq!(file_key("COUPON_JWT_SECRET"), "jwt_secret");
        assert_eq!(file_key("DATABASE_URL"), "database_url");
    }
}
