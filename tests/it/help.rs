//! `--help` as users see it.

use crate::common::TestEnv;

#[test]
fn help() {
    let t = TestEnv::new();
    let out = t.migrate_bare().arg("--help").run();
    out.code(0);
    insta::assert_snapshot!(out.stdout);
}

#[test]
fn up_help() {
    let t = TestEnv::new();
    let out = t.migrate_bare().args(["up", "--help"]).run();
    out.code(0);
    insta::assert_snapshot!(out.stdout);
}
