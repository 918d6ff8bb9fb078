//! rfake started by its Slurm SPANK plugin (spank/rfake_spank.c): the
//! plugin cannot lengthen a task's argument array (slurmstepd owns it), so
//! it makes rfake the task's `argv[0]` and leaves rfake's own arguments in
//! the task's environment:
//!
//! - `RFAKE_SPANK_ARGC`: how many (1 to [`MAX_ARGS`]);
//! - `RFAKE_SPANK_ARG_0` ... `RFAKE_SPANK_ARG_{n-1}`: `exec`, the options, the image;
//! - `RFAKE_SPANK_ARGV0`: the task's own `argv[0]` (its command).
//!
//! rfake's command line is then `rfake ARG_0 ... ARG_{n-1} ARGV0 argv[1]...`,
//! and the variables are removed before anything reads the environment, so
//! the payload never sees them. (`RFAKE_SPANK_RFAKE` is the helper's, for a
//! named container's holder; removed too.)

use std::ffi::OsString;

/// The most arguments the plugin passes (its own limit too).
pub const MAX_ARGS: usize = 256;

const ARGC: &str = "RFAKE_SPANK_ARGC";
const ARGV0: &str = "RFAKE_SPANK_ARGV0";
const ARG: &str = "RFAKE_SPANK_ARG_";
const RFAKE: &str = "RFAKE_SPANK_RFAKE";

/// The command line the plugin meant, from `args` and the variables that
/// `var` returns; `Ok(None)` when the plugin did not start this rfake.
pub fn plugin_args(
    args: &[OsString],
    var: impl Fn(&str) -> Option<OsString>,
) -> Result<Option<Vec<OsString>>, String> {
    let Some(count) = var(ARGC) else {
        return Ok(None);
    };
    let n = count
        .to_str()
        .and_then(|c| c.parse::<usize>().ok())
        .filter(|n| (1..=MAX_ARGS).contains(n))
        .ok_or_else(|| {
            format!(
                "{ARGC}={}: not a count from 1 to {MAX_ARGS} (the rfake SPANK plugin sets it)",
                count.to_string_lossy()
            )
        })?;
    let argv0 = var(ARGV0).ok_or_else(|| format!("{ARGC} is set but {ARGV0} is not"))?;
    let mut out = Vec::with_capacity(n + args.len() + 1);
    out.push(args.first().cloned().unwrap_or_else(|| "rfake".into()));
    for i in 0..n {
        let name = format!("{ARG}{i}");
        out.push(var(&name).ok_or_else(|| format!("{ARGC}={n} but {name} is not set"))?);
    }
    out.push(argv0);
    out.extend(args.iter().skip(1).cloned());
    Ok(Some(out))
}

/// The plugin's command line if it started this rfake (see the module
/// documentation), and its variables removed from the environment. Call
/// first thing in `main`, while the process has one thread.
pub fn take_plugin_args(args: Vec<OsString>) -> Result<Vec<OsString>, String> {
    let Some(full) = plugin_args(&args, |name| std::env::var_os(name))? else {
        return Ok(args);
    };
    let n = full.len() - args.len();
    let mut names = vec![ARGC.to_string(), ARGV0.to_string(), RFAKE.to_string()];
    names.extend((0..n).map(|i| format!("{ARG}{i}")));
    for name in names {
        // SAFETY: called at the start of main, before any other thread
        // exists (the only condition std::env::remove_var has).
        unsafe { std::env::remove_var(name) };
    }
    Ok(full)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn run(args: &[&str], vars: &[(&str, &str)]) -> Result<Option<Vec<String>>, String> {
        let vars: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        plugin_args(&args, |k| vars.get(k).cloned()).map(|o| {
            o.map(|v| {
                v.into_iter()
                    .map(|s| s.to_string_lossy().into_owned())
                    .collect()
            })
        })
    }

    #[test]
    fn the_plugins_command_line() {
        assert_eq!(run(&["rfake", "exec", "i", "true"], &[]), Ok(None));
        let vars = [
            ("RFAKE_SPANK_ARGC", "3"),
            ("RFAKE_SPANK_ARG_0", "exec"),
            ("RFAKE_SPANK_ARG_1", "--join"),
            ("RFAKE_SPANK_ARG_2", "/images/a b.sqfs"),
            ("RFAKE_SPANK_ARGV0", "./ring"),
        ];
        assert_eq!(
            run(&["/usr/bin/rfake", "--mib", "4"], &vars),
            Ok(Some(
                [
                    "/usr/bin/rfake",
                    "exec",
                    "--join",
                    "/images/a b.sqfs",
                    "./ring",
                    "--mib",
                    "4"
                ]
                .map(String::from)
                .to_vec()
            ))
        );
    }

    #[test]
    fn bad_variables_are_errors() {
        for (vars, want) in [
            (vec![("RFAKE_SPANK_ARGC", "0")], "not a count from 1 to 256"),
            (vec![("RFAKE_SPANK_ARGC", "257")], "not a count"),
            (vec![("RFAKE_SPANK_ARGC", "x")], "not a count"),
            (vec![("RFAKE_SPANK_ARGC", "1")], "RFAKE_SPANK_ARGV0 is not"),
            (
                vec![
                    ("RFAKE_SPANK_ARGC", "2"),
                    ("RFAKE_SPANK_ARGV0", "a"),
                    ("RFAKE_SPANK_ARG_0", "exec"),
                ],
                "RFAKE_SPANK_ARG_1 is not set",
            ),
        ] {
            let e = run(&["rfake"], &vars).unwrap_err();
            assert!(e.contains(want), "{vars:?}: {e}");
        }
    }
}
