//! Unit tests of the pool file: what it gives, and the one line each bad
//! file is refused with.

use std::path::Path;
use std::time::Duration;

use super::pool_file::*;

fn defaults() -> PoolDefaults {
    PoolDefaults { workers: 3, max_workers: 8, max_age: None, timeout: Some(Duration::from_secs(30)) }
}

fn parse(text: &str) -> Result<PoolFile, String> {
    PoolFile::parse(Path::new("pools.toml"), text, &defaults()).map_err(|e| e.to_string())
}

#[test]
fn fields_and_their_defaults() {
    let file = parse(
        r#"
[pool.a]
plugin = "libtest_plugin.so"

[pool.b]
plugin = "/opt/libecho.so"
workers = 2
params = { version_tag = "-2", n = 1 }
max_age = 1.5
timeout = 0
service = "bee"
"#,
    )
    .unwrap();
    let [a, b] = &file.pools[..] else { panic!("{:?}", file.pools) };
    assert_eq!((a.name.as_str(), a.plugin.as_str(), a.service.as_str()), ("a", "libtest_plugin.so", "a"));
    assert_eq!((a.workers, a.params.as_deref(), a.max_age, a.timeout), (3, None, None, Some(Duration::from_secs(30))));
    assert_eq!((b.workers, b.service.as_str()), (2, "bee"));
    assert_eq!(b.params.as_deref(), Some(r#"{"n":1,"version_tag":"-2"}"#));
    assert_eq!((b.max_age, b.timeout), (Some(Duration::from_millis(1500)), None));
}

#[test]
fn params_may_be_a_string_as_the_flag_takes_it() {
    let file = parse("[pool.a]\nplugin = \"p.so\"\nparams = \"k:v|k2:w\"\n").unwrap();
    assert_eq!(file.pools[0].params.as_deref(), Some(r#"{"k":"v","k2":"w"}"#));
    let file = parse("[pool.a]\nplugin = \"p.so\"\nparams = '{\"x\": 1}'\n").unwrap();
    assert_eq!(file.pools[0].params.as_deref(), Some(r#"{"x": 1}"#));
}

#[test]
fn bad_files_are_refused_naming_the_line_and_field() {
    let cases = [
        ("[pool.a]\nplugin = \"p.so\"\nworkers = \"two\"\n", "pools.toml:3: pool.a.workers: "),
        ("[pool.a]\nplugin = \"p.so\"\n\nwrkers = 2\n", "pools.toml:4: pool.a.wrkers: unknown field `wrkers`"),
        ("[pool.a]\nworkers = 2\n", "pools.toml:1: pool.a.plugin: missing"),
        ("[pool.a]\nplugin = \"p.so\"\nworkers = 0\n", "pools.toml:3: pool.a.workers: 0 is not between 1"),
        (
            "[pool.a]\nplugin = \"p.so\"\nworkers = 9\n",
            "pools.toml:3: pool.a.workers: 9 is not between 1 and --max-workers 8",
        ),
        ("[pool.a]\nplugin = \"p.so\"\nmax_age = -1\n", "pools.toml:3: pool.a.max_age: -1 is not"),
        ("[pool.a]\nplugin = \"p.so\"\ntimeout = \"soon\"\n", "pools.toml:3: pool.a.timeout: must be a number"),
        ("[pool.a]\nplugin = \"p.so\"\nparams = 3\n", "pools.toml:3: pool.a.params: must be a table or a string"),
        ("[pool.a]\nplugin = \"p.so\"\nparams = \"{bad\"\n", "pools.toml:3: pool.a.params: params is not valid JSON"),
        ("[pool.a]\nplugin = \"p.so\"\nservice = \" \"\n", "pools.toml:3: pool.a.service: is empty"),
        (
            "[pool.a]\nplugin = \"p.so\"\n[pool.b]\nplugin = \"p.so\"\nservice = \"a\"\n",
            "pools.toml:5: pool.b.service: service \"a\" is pool \"a\"'s already",
        ),
        ("[pool.a]\nplugin = \"p.so\"\nworkers = \n", "pools.toml:3: pool.a.workers: "),
        ("[pool.a]\nplugin = \"p.so\"\n[pool.a]\nplugin = \"q.so\"\n", "pools.toml:3: "),
        ("[pools.a]\nplugin = \"p.so\"\n", "pools.toml:1: pools.a: unknown field `pools`"),
        ("", "pools.toml:1: pool: no pool"),
    ];
    for (text, expected) in cases {
        let err = parse(text).map(|f| f.pools).unwrap_err();
        assert!(err.starts_with(expected), "{text:?}:\n got {err:?}\nwant {expected:?}");
        assert!(!err.contains('\n'), "one line: {err:?}");
    }
}

#[test]
fn later_refusals_name_the_field_that_was_set() {
    let file = parse("# pools\n[pool.a]\nplugin = \"p.so\"\n\nparams = { fail = 1 }\n").unwrap();
    assert_eq!(file.refuse("a", "plugin", "no").to_string(), "pools.toml:3: pool.a.plugin: no");
    assert_eq!(file.refuse("a", "params", "no").to_string(), "pools.toml:5: pool.a.params: no");
    assert!(file.refuse("a", "workers", "no").to_string().starts_with("pools.toml:"));
}

#[test]
fn the_readme_sample_is_a_good_file() {
    let readme = include_str!("../../README.md");
    let section = &readme[readme.find("### A pool file").expect("the README's pool file paragraph")..];
    let start = section.find("```toml\n").unwrap() + "```toml\n".len();
    let sample = &section[start..start + section[start..].find("```").unwrap()];
    let file = PoolFile::parse(Path::new("pools.toml"), sample, &defaults()).unwrap();
    let services: Vec<&str> = file.pools.iter().map(|p| p.service.as_str()).collect();
    assert_eq!(services, ["echo", "hash"]);
    assert_eq!(file.pools[1].params.as_deref(), Some(r#"{"rounds":3}"#));
}
