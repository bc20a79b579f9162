use super::*;
use proptest::prelude::*;

fn parse(line: &str) -> Result<Command, CommandError> {
    parse_command(line.as_bytes())
}

fn err(line: &str) -> String {
    match parse(line) {
        Err(CommandError(msg)) => msg,
        Ok(cmd) => panic!("expected an error for {line:?}, got {cmd:?}"),
    }
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

// --- HELLO -----------------------------------------------------------------------------------

#[test]
fn hello_full_go_client() {
    let line = br#"HELLO {"hostname":"web-1","wid":"","pid":4242,"labels":["golang"],"v":2,"pwdhash":"abc","username":"u"}"#;
    assert_eq!(
        parse_hello(line),
        Ok(Hello {
            v: Some(2),
            pwdhash: "abc".into(),
            wid: String::new(),
            hostname: "web-1".into(),
            pid: 4242,
            labels: names(&["golang"]),
            username: "u".into(),
        })
    );
}

#[test]
fn hello_minimal_and_defaults() {
    let h = parse_hello(br#"HELLO {}"#).unwrap();
    assert_eq!(
        h,
        Hello {
            v: None,
            pwdhash: String::new(),
            wid: String::new(),
            hostname: String::new(),
            pid: 0,
            labels: vec![],
            username: String::new(),
        }
    );
    let h = parse_hello(br#"HELLO {"v":2}"#).unwrap();
    assert_eq!(h.v, Some(2));
}

#[test]
fn hello_nulls_are_absent() {
    let line = br#"HELLO {"v":null,"pwdhash":null,"wid":null,"hostname":null,"pid":null,"labels":null,"username":null}"#;
    let h = parse_hello(line).unwrap();
    assert_eq!(h.v, None);
    assert_eq!(h.wid, "");
    assert_eq!(h.pid, 0);
    assert!(h.labels.is_empty());
}

#[test]
fn hello_python_client_without_v_and_with_spaces() {
    let line = br#"HELLO {"hostname": "box", "pid": 7, "labels": ["python"], "wid": "abc123", "pwdhash": "x"}"#;
    let h = parse_hello(line).unwrap();
    assert_eq!(h.v, None);
    assert_eq!(h.wid, "abc123");
    assert_eq!(h.pid, 7);
}

#[test]
fn hello_ignores_unknown_fields() {
    let h = parse_hello(br#"HELLO {"v":2,"extra":{"deep":[1,2,{"x":null}]},"wid":"w"}"#).unwrap();
    assert_eq!(h.wid, "w");
}

#[test]
fn hello_trailing_whitespace_is_fine() {
    assert!(parse_hello(b"HELLO {\"v\":2}  ").is_ok());
}

#[test]
fn not_hello() {
    for line in [
        &b""[..],
        b"HELLO",
        b"HELLO ",
        b"HELLO  {}",
        b"hello {}",
        b"HELLO{}",
        b"PUSH {}",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    ] {
        assert_eq!(parse_hello(line), Err(HelloError::NotHello), "{line:?}");
    }
    assert_eq!(HelloError::NotHello.to_string(), "expected HELLO");
}

#[test]
fn hello_invalid() {
    for line in [
        &br#"HELLO {"#[..],
        br#"HELLO {"v":256}"#,
        br#"HELLO {"v":-1}"#,
        br#"HELLO {"v":2.5}"#,
        br#"HELLO {"v":"2"}"#,
        br#"HELLO {"wid":5}"#,
        br#"HELLO {"pid":"12"}"#,
        br#"HELLO {"labels":"x"}"#,
        br#"HELLO {"labels":[1]}"#,
        br#"HELLO {"hostname":true}"#,
        br#"HELLO {"pwdhash":[]}"#,
        br#"HELLO {"username":{}}"#,
        br#"HELLO {} trailing"#,
        b"HELLO {\"wid\":\"\xff\"}",
    ] {
        match parse_hello(line) {
            Err(HelloError::Invalid(msg)) => assert!(!msg.is_empty()),
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(line)),
        }
    }
    assert!(HelloError::Invalid("x".into())
        .to_string()
        .starts_with("invalid HELLO: "));
}

#[test]
fn hello_v_bounds() {
    assert_eq!(parse_hello(br#"HELLO {"v":0}"#).unwrap().v, Some(0));
    assert_eq!(parse_hello(br#"HELLO {"v":255}"#).unwrap().v, Some(255));
}

// --- Verb handling ---------------------------------------------------------------------------

#[test]
fn unknown_verbs() {
    assert_eq!(err(r#"push {"jid":"x"}"#), "unknown command push");
    assert_eq!(err("PING"), "unknown command PING");
    assert_eq!(err("REQUEUE {}"), "unknown command REQUEUE");
    assert_eq!(err(""), "unknown command ");
    assert_eq!(err(" INFO"), "unknown command ");
    assert_eq!(err("INFO\t"), "unknown command INFO\t");
}

#[test]
fn absurdly_long_verb_is_truncated() {
    let verb = "X".repeat(100_000);
    let msg = err(&verb);
    assert_eq!(msg, format!("unknown command {}...", "X".repeat(64)));
    // Truncation respects character boundaries.
    let msg = err(&"é".repeat(100));
    assert_eq!(msg, format!("unknown command {}...", "é".repeat(64)));
    assert_eq!(
        err(&"Y".repeat(64)),
        format!("unknown command {}", "Y".repeat(64))
    );
}

#[test]
fn invalid_utf8() {
    assert_eq!(
        parse_command(b"PUSH {\"jid\":\"\xff\"}"),
        Err(CommandError("invalid UTF-8 in command".into()))
    );
    assert_eq!(
        parse_command(b"\xc3"),
        Err(CommandError("invalid UTF-8 in command".into()))
    );
}

#[test]
fn no_argument_commands_ignore_trailing_text() {
    assert_eq!(parse("END"), Ok(Command::End));
    assert_eq!(parse("END now please"), Ok(Command::End));
    assert_eq!(parse("FLUSH"), Ok(Command::Flush));
    assert_eq!(parse("FLUSH x"), Ok(Command::Flush));
    assert_eq!(parse("INFO"), Ok(Command::Info));
    assert_eq!(parse("INFO {}"), Ok(Command::Info));
}

#[test]
fn hello_after_handshake() {
    assert_eq!(parse(r#"HELLO {"v":2}"#), Ok(Command::Hello));
    assert_eq!(parse("HELLO"), Ok(Command::Hello));
}

#[test]
fn verbs() {
    let cases = [
        ("END", "END"),
        ("FLUSH", "FLUSH"),
        ("INFO", "INFO"),
        ("PUSH {}", "PUSH"),
        ("PUSHB []", "PUSHB"),
        ("FETCH", "FETCH"),
        (r#"ACK {"jid":"j"}"#, "ACK"),
        (r#"FAIL {"jid":"j"}"#, "FAIL"),
        (r#"BEAT {"wid":"w"}"#, "BEAT"),
        (r#"MUTATE {"cmd":"clear","target":"dead"}"#, "MUTATE"),
        ("QUEUE PAUSE a", "QUEUE"),
        ("BATCH NEW {}", "BATCH"),
        ("TRACK GET j", "TRACK"),
        ("HELLO {}", "HELLO"),
    ];
    for (line, verb) in cases {
        assert_eq!(parse(line).unwrap().verb(), verb, "{line}");
    }
}

// --- PUSH / PUSHB ----------------------------------------------------------------------------

#[test]
fn push_keeps_raw_json_with_spaces() {
    let json = r#"{"jid": "0123456789abcdef", "jobtype": "Report", "args": [7, "a b"]}"#;
    assert_eq!(
        parse(&format!("PUSH {json}")),
        Ok(Command::Push(json.into()))
    );
}

#[test]
fn push_argument_is_everything_after_the_first_space() {
    assert_eq!(parse("PUSH  {} "), Ok(Command::Push(" {} ".into())));
    // Not validated here.
    assert_eq!(parse("PUSH nonsense"), Ok(Command::Push("nonsense".into())));
}

#[test]
fn pushb() {
    let json = r#"[{"jid":"a1b2c3d4e5","jobtype":"X","args":[]}, {"jid":"f6g7h8i9j0"}]"#;
    assert_eq!(
        parse(&format!("PUSHB {json}")),
        Ok(Command::PushB(json.into()))
    );
}

#[test]
fn push_and_pushb_require_an_argument() {
    assert_eq!(err("PUSH"), "PUSH requires an argument");
    assert_eq!(err("PUSH "), "PUSH requires an argument");
    assert_eq!(err("PUSH   "), "PUSH requires an argument");
    assert_eq!(err("PUSHB"), "PUSHB requires an argument");
    assert_eq!(err("PUSHB "), "PUSHB requires an argument");
}

// --- FETCH -----------------------------------------------------------------------------------

#[test]
fn fetch_queues_in_order() {
    assert_eq!(
        parse("FETCH critical default low"),
        Ok(Command::Fetch(names(&["critical", "default", "low"])))
    );
}

#[test]
fn fetch_skips_empty_tokens() {
    assert_eq!(
        parse("FETCH  a   b "),
        Ok(Command::Fetch(names(&["a", "b"])))
    );
}

#[test]
fn fetch_defaults_to_default_queue() {
    assert_eq!(parse("FETCH"), Ok(Command::Fetch(names(&["default"]))));
    assert_eq!(parse("FETCH "), Ok(Command::Fetch(names(&["default"]))));
    assert_eq!(parse("FETCH    "), Ok(Command::Fetch(names(&["default"]))));
}

#[test]
fn fetch_names_are_case_sensitive() {
    assert_eq!(
        parse("FETCH Hi hi"),
        Ok(Command::Fetch(names(&["Hi", "hi"])))
    );
}

// --- ACK -------------------------------------------------------------------------------------

#[test]
fn ack() {
    assert_eq!(
        parse(r#"ACK {"jid":"nope12345"}"#),
        Ok(Command::Ack(AckArgs {
            jid: "nope12345".into()
        }))
    );
}

#[test]
fn ack_ignores_other_keys_of_any_type() {
    assert_eq!(
        parse(r#"ACK { "n": 1, "jid" : "j1", "x": [null, {}], "b": true } "#),
        Ok(Command::Ack(AckArgs { jid: "j1".into() }))
    );
}

#[test]
fn ack_invalid() {
    for payload in [
        r#"{}"#,
        r#"{"jid":5}"#,
        r#"{"jid":null}"#,
        r#"["j1"]"#,
        r#""j1""#,
        r#"{"jid":"j1""#,
        r#"{"jid":"j1"} x"#,
        "nonsense",
    ] {
        assert_eq!(
            err(&format!("ACK {payload}")),
            format!("invalid ACK {payload}")
        );
    }
}

#[test]
fn ack_requires_an_argument() {
    assert_eq!(err("ACK"), "ACK requires an argument");
    assert_eq!(err("ACK "), "ACK requires an argument");
}

#[test]
fn huge_invalid_payload_is_truncated_in_the_message() {
    let payload = "x".repeat(10_000);
    let msg = err(&format!("ACK {payload}"));
    assert_eq!(msg, format!("invalid ACK {}...", "x".repeat(1024)));
}

// --- FAIL ------------------------------------------------------------------------------------

#[test]
fn fail_full() {
    let line = r#"FAIL {"jid":"j1","errtype":"RuntimeError","message":"boom  ","backtrace":["a.rb:1","b.rb:2"]}"#;
    assert_eq!(
        parse(line),
        Ok(Command::Fail(FailArgs {
            jid: "j1".into(),
            errtype: "RuntimeError".into(),
            message: "boom  ".into(),
            backtrace: names(&["a.rb:1", "b.rb:2"]),
        }))
    );
}

#[test]
fn fail_jid_only_and_nulls() {
    let expected = Ok(Command::Fail(FailArgs {
        jid: "nope12345".into(),
        errtype: String::new(),
        message: String::new(),
        backtrace: vec![],
    }));
    assert_eq!(parse(r#"FAIL {"jid":"nope12345"}"#), expected);
    assert_eq!(
        parse(
            r#"FAIL {"jid": "nope12345", "errtype": null, "message": null, "backtrace": null, "other": 1}"#
        ),
        expected
    );
}

#[test]
fn fail_missing_jid() {
    assert_eq!(err(r#"FAIL {}"#), "missing JID");
    assert_eq!(err(r#"FAIL {"jid":null}"#), "missing JID");
    assert_eq!(err(r#"FAIL {"jid":"","message":"x"}"#), "missing JID");
}

#[test]
fn fail_invalid() {
    for payload in [
        r#"{"jid":"j1","backtrace":"line 1"}"#,
        r#"{"jid":"j1","backtrace":[1]}"#,
        r#"{"jid":"j1","message":5}"#,
        r#"{"jid":"j1","errtype":{}}"#,
        r#"{"jid":7}"#,
        r#"[]"#,
        r#"{"jid":"j1""#,
    ] {
        assert_eq!(
            err(&format!("FAIL {payload}")),
            format!("invalid FAIL {payload}")
        );
    }
    // Type errors win over the missing JID.
    assert_eq!(
        err(r#"FAIL {"backtrace":"x"}"#),
        r#"invalid FAIL {"backtrace":"x"}"#
    );
}

#[test]
fn fail_requires_an_argument() {
    assert_eq!(err("FAIL"), "FAIL requires an argument");
}

// --- BEAT ------------------------------------------------------------------------------------

#[test]
fn beat() {
    assert_eq!(
        parse(r#"BEAT {"wid":"4qpc2443vpvai","rss_kb":54176}"#),
        Ok(Command::Beat(BeatArgs {
            wid: "4qpc2443vpvai".into(),
            current_state: String::new(),
            rss_kb: 54176,
        }))
    );
    assert_eq!(
        parse(r#"BEAT {"wid": "w", "current_state": "quiet", "rss_kb": null}"#),
        Ok(Command::Beat(BeatArgs {
            wid: "w".into(),
            current_state: "quiet".into(),
            rss_kb: 0,
        }))
    );
    assert_eq!(
        parse(r#"BEAT {}"#),
        Ok(Command::Beat(BeatArgs {
            wid: String::new(),
            current_state: String::new(),
            rss_kb: 0,
        }))
    );
}

#[test]
fn beat_invalid() {
    for payload in [
        r#"{"wid":1}"#,
        r#"{"wid":"w","rss_kb":"12"}"#,
        r#"{"wid":"w","rss_kb":1.5}"#,
        r#"{"wid":"w","current_state":false}"#,
        r#"["w"]"#,
        "{",
    ] {
        assert_eq!(
            err(&format!("BEAT {payload}")),
            format!("invalid BEAT {payload}")
        );
    }
    assert_eq!(err("BEAT"), "BEAT requires an argument");
}

// --- MUTATE ----------------------------------------------------------------------------------

#[test]
fn mutate_clear() {
    assert_eq!(
        parse(r#"MUTATE {"cmd":"clear","target":"dead"}"#),
        Ok(Command::Mutate(MutateArgs {
            op: MutateOp::Clear,
            target: MutateTarget::Dead,
            filter: None,
        }))
    );
}

#[test]
fn mutate_with_spaces_in_json() {
    // Faktory answers "invalid format" here (section 10.1); we accept it.
    assert_eq!(
        parse(r#"MUTATE {"cmd": "clear", "target": "dead"}"#),
        Ok(Command::Mutate(MutateArgs {
            op: MutateOp::Clear,
            target: MutateTarget::Dead,
            filter: None,
        }))
    );
    assert_eq!(
        parse(
            r#"MUTATE  { "cmd" : "kill" , "target" : "retries" , "filter" : { "jobtype" : "A B" } } "#
        ),
        Ok(Command::Mutate(MutateArgs {
            op: MutateOp::Kill,
            target: MutateTarget::Retries,
            filter: Some(MutateFilter {
                jids: vec![],
                regexp: String::new(),
                jobtype: "A B".into(),
            }),
        }))
    );
}

#[test]
fn mutate_all_ops_and_targets() {
    for (cmd, op) in [
        ("clear", MutateOp::Clear),
        ("discard", MutateOp::Discard),
        ("kill", MutateOp::Kill),
        ("requeue", MutateOp::Requeue),
    ] {
        for (tgt, target) in [
            ("retries", MutateTarget::Retries),
            ("scheduled", MutateTarget::Scheduled),
            ("dead", MutateTarget::Dead),
        ] {
            let line = format!(r#"MUTATE {{"cmd":"{cmd}","target":"{tgt}"}}"#);
            let Ok(Command::Mutate(args)) = parse(&line) else {
                panic!("{line}");
            };
            assert_eq!((args.op, args.target), (op, target));
            assert_eq!(args.op.as_str(), cmd);
            assert_eq!(args.target.as_str(), tgt);
        }
    }
}

#[test]
fn mutate_filter() {
    assert_eq!(
        parse(
            r#"MUTATE {"cmd":"requeue","target":"retries","filter":{"jids":["a","b"],"regexp":"*Foo*","jobtype":"Foo","extra":1}}"#
        ),
        Ok(Command::Mutate(MutateArgs {
            op: MutateOp::Requeue,
            target: MutateTarget::Retries,
            filter: Some(MutateFilter {
                jids: names(&["a", "b"]),
                regexp: "*Foo*".into(),
                jobtype: "Foo".into(),
            }),
        }))
    );
    assert_eq!(
        parse(r#"MUTATE {"cmd":"discard","target":"scheduled","filter":{"jids":null}}"#),
        Ok(Command::Mutate(MutateArgs {
            op: MutateOp::Discard,
            target: MutateTarget::Scheduled,
            filter: Some(MutateFilter::default()),
        }))
    );
    assert_eq!(
        parse(r#"MUTATE {"cmd":"discard","target":"scheduled","filter":null}"#),
        Ok(Command::Mutate(MutateArgs {
            op: MutateOp::Discard,
            target: MutateTarget::Scheduled,
            filter: None,
        }))
    );
}

#[test]
fn mutate_invalid_format() {
    assert_eq!(err("MUTATE"), "invalid format");
    assert_eq!(err("MUTATE "), "invalid format");
    assert_eq!(err("MUTATE   "), "invalid format");
}

#[test]
fn mutate_target_is_checked_before_cmd() {
    assert_eq!(
        err(r#"MUTATE {"cmd":"clear","target":"queue"}"#),
        "invalid target for mutation command"
    );
    assert_eq!(
        err(r#"MUTATE {"cmd":"bogus","target":"bogus"}"#),
        "invalid target for mutation command"
    );
    assert_eq!(err(r#"MUTATE {}"#), "invalid target for mutation command");
    assert_eq!(
        err(r#"MUTATE {"cmd":"clear","target":"Dead"}"#),
        "invalid target for mutation command"
    );
    assert_eq!(
        err(r#"MUTATE {"cmd":"bogus","target":"dead"}"#),
        "unknown mutate operation"
    );
    assert_eq!(
        err(r#"MUTATE {"target":"dead"}"#),
        "unknown mutate operation"
    );
}

#[test]
fn mutate_json_errors_are_the_parser_message() {
    for payload in [
        r#"{"cmd":"clear""#,
        r#"{"cmd":5,"target":"dead"}"#,
        r#"{"cmd":"kill","target":"dead","filter":{"jids":"a"}}"#,
        r#"{"cmd":"kill","target":"dead","filter":{"regexp":1}}"#,
        r#"{"cmd":"kill","target":"dead","filter":[]}"#,
        r#"{"cmd":"kill","target":"dead","filter":"x"}"#,
        r#"["clear","dead"]"#,
        "nope",
    ] {
        let msg = err(&format!("MUTATE {payload}"));
        assert!(msg.contains("line 1 column"), "{payload}: {msg}");
    }
    assert_eq!(
        err(r#"MUTATE {"cmd":5,"target":"dead"}"#),
        "invalid type: integer `5`, expected a string at line 1 column 8"
    );
    assert_eq!(
        err(r#"MUTATE ["clear","dead"]"#),
        "invalid type: sequence, expected a JSON object at line 1 column 0"
    );
}

// --- QUEUE -----------------------------------------------------------------------------------

#[test]
fn queue_pause_resume_remove() {
    assert_eq!(
        parse("QUEUE PAUSE critical low"),
        Ok(Command::Queue(QueueCommand::Pause(QueueSelector::Names(
            names(&["critical", "low"])
        ))))
    );
    assert_eq!(
        parse("QUEUE RESUME a"),
        Ok(Command::Queue(QueueCommand::Resume(QueueSelector::Names(
            names(&["a"])
        ))))
    );
    assert_eq!(
        parse("QUEUE REMOVE *"),
        Ok(Command::Queue(QueueCommand::Remove(QueueSelector::All)))
    );
}

#[test]
fn queue_subcommand_is_case_insensitive_names_are_not() {
    assert_eq!(
        parse("QUEUE pause Default x"),
        Ok(Command::Queue(QueueCommand::Pause(QueueSelector::Names(
            names(&["Default", "x"])
        ))))
    );
    assert_eq!(
        parse("QUEUE ReSuMe *"),
        Ok(Command::Queue(QueueCommand::Resume(QueueSelector::All)))
    );
    assert_eq!(
        parse("QUEUE latency a"),
        Ok(Command::Queue(QueueCommand::Latency(names(&["a"]))))
    );
}

#[test]
fn queue_any_star_means_all() {
    assert_eq!(
        parse("QUEUE PAUSE a * b"),
        Ok(Command::Queue(QueueCommand::Pause(QueueSelector::All)))
    );
    // "*" must be a whole token.
    assert_eq!(
        parse("QUEUE PAUSE a*"),
        Ok(Command::Queue(QueueCommand::Pause(QueueSelector::Names(
            names(&["a*"])
        ))))
    );
}

#[test]
fn queue_extra_spaces_are_skipped() {
    assert_eq!(
        parse("QUEUE  PAUSE   a  b "),
        Ok(Command::Queue(QueueCommand::Pause(QueueSelector::Names(
            names(&["a", "b"])
        ))))
    );
}

#[test]
fn queue_latency() {
    assert_eq!(
        parse("QUEUE LATENCY low default high"),
        Ok(Command::Queue(QueueCommand::Latency(names(&[
            "low", "default", "high"
        ]))))
    );
    assert_eq!(
        err("QUEUE LATENCY *"),
        "QUEUE LATENCY does not support wildcards"
    );
    assert_eq!(
        err("QUEUE LATENCY a *"),
        "QUEUE LATENCY does not support wildcards"
    );
    assert_eq!(
        err("QUEUE LATENCY"),
        "QUEUE LATENCY requires at least one queue name"
    );
}

#[test]
fn queue_unknown_subcommand() {
    assert_eq!(err("QUEUE UNPAUSE x"), "no such QUEUE subcommand: UNPAUSE");
    assert_eq!(err("QUEUE unpause"), "no such QUEUE subcommand: UNPAUSE");
    let long = "z".repeat(500);
    assert_eq!(
        err(&format!("QUEUE {long} a")),
        format!("no such QUEUE subcommand: {}...", "Z".repeat(64))
    );
}

#[test]
fn queue_missing_arguments() {
    let no_sub = "QUEUE requires a subcommand (PAUSE, RESUME, REMOVE or LATENCY)";
    assert_eq!(err("QUEUE"), no_sub);
    assert_eq!(err("QUEUE "), no_sub);
    assert_eq!(err("QUEUE    "), no_sub);
    assert_eq!(
        err("QUEUE PAUSE"),
        "QUEUE PAUSE requires at least one queue name (or *)"
    );
    assert_eq!(
        err("QUEUE resume "),
        "QUEUE RESUME requires at least one queue name (or *)"
    );
    assert_eq!(
        err("QUEUE REMOVE"),
        "QUEUE REMOVE requires at least one queue name (or *)"
    );
}

// --- BATCH / TRACK ---------------------------------------------------------------------------

#[test]
fn batch_and_track_keep_raw_argument() {
    assert_eq!(
        parse(r#"BATCH NEW {"description": "x y"}"#),
        Ok(Command::Batch(r#"NEW {"description": "x y"}"#.into()))
    );
    assert_eq!(parse("BATCH"), Ok(Command::Batch(String::new())));
    assert_eq!(parse("TRACK GET abc"), Ok(Command::Track("GET abc".into())));
    assert_eq!(parse("TRACK"), Ok(Command::Track(String::new())));
}

// --- Misc ------------------------------------------------------------------------------------

#[test]
fn command_error_display_is_the_message() {
    assert_eq!(
        CommandError("invalid format".into()).to_string(),
        "invalid format"
    );
}

#[test]
fn reference_error_session() {
    // Section 10.1 "Errors", the parts decided at parse time.
    assert_eq!(err(r#"push {"jid":"x"}"#), "unknown command push");
    assert!(matches!(
        parse(r#"PUSH {"jid":"short"}"#),
        Ok(Command::Push(_))
    ));
    assert!(matches!(
        parse(r#"FAIL {"jid":"nope12345"}"#),
        Ok(Command::Fail(_))
    ));
    assert!(matches!(
        parse(r#"ACK {"jid":"nope12345"}"#),
        Ok(Command::Ack(_))
    ));
    assert!(matches!(
        parse(r#"BEAT {"wid":"ghost"}"#),
        Ok(Command::Beat(_))
    ));
    assert_eq!(err("QUEUE UNPAUSE x"), "no such QUEUE subcommand: UNPAUSE");
}

#[test]
fn truncate_chars_helper() {
    assert_eq!(truncate_chars("abc", 3), "abc");
    assert_eq!(truncate_chars("abcd", 3), "abc...");
    assert_eq!(truncate_chars("", 0), "");
    assert_eq!(truncate_chars("a", 0), "...");
}

proptest! {
    #[test]
    fn parse_command_never_panics(line in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse_command(&line);
    }

    #[test]
    fn parse_command_never_panics_on_verb_prefixed_input(
        verb in prop_oneof![
            Just("END"), Just("FLUSH"), Just("INFO"), Just("PUSH"), Just("PUSHB"),
            Just("FETCH"), Just("ACK"), Just("FAIL"), Just("BEAT"), Just("MUTATE"),
            Just("QUEUE"), Just("BATCH"), Just("TRACK"), Just("HELLO"),
        ],
        rest in "( |\\*|[A-Za-z]{1,8}|\\{|\\}|\\[|\\]|\"|:|,|null|[0-9]{1,3}|\\\\u[0-9a-f]{4}|é){0,24}",
    ) {
        let line = format!("{verb} {rest}");
        if let Ok(cmd) = parse_command(line.as_bytes()) {
            prop_assert_eq!(cmd.verb(), verb);
        }
    }

    #[test]
    fn parse_hello_never_panics(tail in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut line = b"HELLO {".to_vec();
        line.extend_from_slice(&tail);
        let _ = parse_hello(&line);
        let _ = parse_hello(&tail);
    }

    #[test]
    fn json_argument_round_trips_through_push(s in "\\PC{0,64}") {
        let json = serde_json::to_string(&serde_json::json!({"jid": s, "args": [s]})).unwrap();
        prop_assert_eq!(
            parse_command(format!("PUSH {json}").as_bytes()),
            Ok(Command::Push(json.clone()))
        );
        let ack = format!(r#"ACK {{"jid":{}}}"#, serde_json::to_string(&s).unwrap());
        prop_assert_eq!(
            parse_command(ack.as_bytes()),
            Ok(Command::Ack(AckArgs { jid: s.clone() }))
        );
    }
}
