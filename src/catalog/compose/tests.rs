use super::*;

const TWO_SERVICES: &str = r#"
x-note: ignored
version: "3.8"
name: blog
services:
  web:
    image: docker.io/library/wordpress:${APP_VERSION}
    ports: ["${APP_HTTP_PORT}:80"]
    environment:
      DB_HOST: db:3306
      DB_PASSWORD: ${APP_PASSWORD}
    depends_on:
      db: {condition: service_healthy}
    volumes: ["site:/var/www/html"]
    stop_grace_period: 1m30s
  db:
    image: docker.io/library/mysql:8.4
    x-comment: also ignored
    healthcheck:
      test: ["CMD", "mysqladmin", "ping"]
      interval: 10s
      retries: 5
    stop_signal: SIGINT
volumes:
  site: {}
"#;

fn vars(name: &str) -> Option<String> {
    Some(match name {
        "APP_VERSION" => "6.8".into(),
        "APP_HTTP_PORT" => "9001".into(),
        "APP_PASSWORD" => "s3cret".into(),
        "APP_NAME" => "blog".into(),
        "APP_DATA" => "/srv/apps/blog/data".into(),
        _ => return None,
    })
}

fn read_in(text: &str, folder: &Path) -> Result<Compose, String> {
    let context = Context {
        folder,
        variables: &vars,
        app_data: Path::new("/srv/apps/blog/data"),
    };
    Compose::read(text, &context).map(|(compose, _)| compose)
}

fn read(text: &str) -> Result<Compose, String> {
    read_in(text, Path::new("/nonexistent"))
}

/// One service `s` with `body` (YAML lines at service level).
fn service(body: &str) -> Result<Service, String> {
    let text = format!("services:\n  s:\n    image: reg/x:1\n{body}\nvolumes:\n  data: {{}}\n");
    read(&text).map(|mut c| c.services.remove("s").unwrap())
}

fn refused(body: &str, named: &str) {
    let err = service(body).expect_err(body);
    assert!(
        err.contains("services.s") && err.contains(named),
        "{body}: {err}"
    );
}

#[test]
fn valid_file_parses_and_orders_dependencies() {
    let compose = read(TWO_SERVICES).unwrap();
    compose.validate("web", 80, 9001).unwrap();
    assert_eq!(compose.start_order().unwrap(), ["db", "web"]);
    let web = &compose.services["web"];
    assert_eq!(web.depends_on["db"], Condition::ServiceHealthy);
    assert_eq!(web.image, "docker.io/library/wordpress:6.8");
    assert_eq!(web.stop_grace_period, Some(Duration::from_secs(90)));
    assert!(
        web.environment
            .contains(&("DB_PASSWORD".into(), "s3cret".into()))
    );
    let db = &compose.services["db"];
    assert_eq!(db.stop_signal, Some(2));
    let check = db.healthcheck.as_ref().unwrap();
    assert_eq!(check.args().unwrap(), ["mysqladmin", "ping"]);
    assert_eq!(
        (check.interval, check.retries()),
        (Some(Duration::from_secs(10)), 5)
    );
    assert!(compose.host_access().is_empty());
}

#[test]
fn unknown_keys_are_named_with_their_path() {
    let text = TWO_SERVICES.replace("    stop_signal: SIGINT", "    secrets: [a]");
    let err = read(&text).unwrap_err();
    assert!(
        err.contains("services.db") && err.contains("secrets"),
        "{err}"
    );
    let err = read(&format!(
        "{TWO_SERVICES}configs: {{c: {{external: true}}}}\n"
    ))
    .unwrap_err();
    assert!(err.contains("configs"), "{err}");
    refused("    deploy: {replicas: 2}", "replicas");
    refused("    healthcheck: {test: [CMD, x], every: 1s}", "every");
}

#[test]
fn semantic_errors() {
    let cases = [
        ("${APP_VERSION}", "${NOT_A_VAR}", "NOT_A_VAR"),
        (
            "db: {condition: service_healthy}",
            "cache: {condition: service_healthy}",
            "cache",
        ),
        (
            "site:/var/www/html",
            "undeclared:/var/www/html",
            "undeclared",
        ),
        ("1m30s", "soon", "stop_grace_period"),
        ("SIGINT", "SIGNOPE", "stop_signal"),
        (
            "${APP_HTTP_PORT}:80",
            "${APP_HTTP_PORT}:8080",
            "web_port 80",
        ),
    ];
    for (from, to, named) in cases {
        let err = read(&TWO_SERVICES.replace(from, to))
            .and_then(|c| c.validate("web", 80, 9001))
            .unwrap_err();
        assert!(err.contains(named), "{to}: {err}");
    }
}

#[test]
fn dependency_cycle_is_rejected() {
    let text = TWO_SERVICES.replace("    stop_signal: SIGINT", "    depends_on: [web]");
    let err = read(&text).unwrap().validate("web", 80, 9001).unwrap_err();
    assert!(err.contains("cycle"), "{err}");
}

#[test]
fn render_fills_every_string() {
    let folder = Path::new("/nonexistent");
    let context = Context {
        folder,
        variables: &vars,
        app_data: folder,
    };
    let (compose, text) = Compose::read(TWO_SERVICES, &context).unwrap();
    assert_eq!(compose.services["web"].ports[0].host, Some(9001));
    assert!(text.contains("s3cret") && !text.contains("${"), "{text}");
    let none = Context {
        folder,
        variables: &|_| None,
        app_data: folder,
    };
    assert!(Compose::read(TWO_SERVICES, &none).is_err());
}

#[test]
fn port_forms() {
    let spec = |host_ip: &str, host, container, protocol| PortSpec {
        host_ip: host_ip.to_string(),
        host,
        container,
        protocol,
    };
    assert_eq!(
        parse_port("8080:80").unwrap(),
        [spec("", Some(8080), 80, "tcp")]
    );
    assert_eq!(
        parse_port("127.0.0.1:8080:80/tcp").unwrap(),
        [spec("127.0.0.1", Some(8080), 80, "tcp")]
    );
    assert_eq!(
        parse_port("[::1]:8080:80").unwrap(),
        [spec("::1", Some(8080), 80, "tcp")]
    );
    assert_eq!(parse_port("53/udp").unwrap(), [spec("", None, 53, "udp")]);
    assert_eq!(
        parse_port("9000-9001:8000-8001").unwrap(),
        [
            spec("", Some(9000), 8000, "tcp"),
            spec("", Some(9001), 8001, "tcp")
        ]
    );
    assert_eq!(parse_port("3000-3001").unwrap().len(), 2);
    assert_eq!(
        parse_port("127.0.0.1::80").unwrap(),
        [spec("127.0.0.1", None, 80, "tcp")]
    );
    assert!(parse_port("80/sctp").is_err());
    assert!(parse_port("localhost:8080:80").is_err());
    assert!(parse_port("0:80").is_err());
    assert!(parse_port("9000-9002:80-81").is_err());
    let long = service(
        "    ports:\n      - {target: 80, published: \"8080\", host_ip: 127.0.0.1, protocol: udp, mode: host}\n      - 9090\n",
    )
    .unwrap();
    assert_eq!(
        long.ports,
        [
            spec("127.0.0.1", Some(8080), 80, "udp"),
            spec("", None, 9090, "tcp")
        ]
    );
    refused("    ports: [{target: 80, color: red}]", "color");
}

#[test]
fn volume_forms() {
    let s = service(
        "    volumes:\n      - data:/d:ro\n      - ./conf/x.ini:/etc/x.ini\n      - ${APP_DATA}/up:/up\n      - /anon\n      - {type: tmpfs, target: /t, tmpfs: {size: 1m, mode: 1777}}\n      - {type: bind, source: ./web, target: /w, read_only: true}\n      - {type: volume, source: data, target: /v, volume: {nocopy: true}}\n",
    )
    .unwrap();
    let sources: Vec<&MountSource> = s.volumes.iter().map(|m| &m.source).collect();
    assert_eq!(
        sources,
        [
            &MountSource::Named("data".into()),
            &MountSource::AppFolder("conf/x.ini".into()),
            &MountSource::AppData("up".into()),
            &MountSource::Anonymous,
            &MountSource::Tmpfs {
                size: Some(1 << 20),
                mode: Some(0o1777)
            },
            &MountSource::AppFolder("web".into()),
            &MountSource::Named("data".into()),
        ]
    );
    assert!(s.volumes[0].read_only && s.volumes[5].read_only && !s.volumes[1].read_only);
    assert!(s.host_access().is_empty());
    refused("    volumes: [\"../up:/x\"]", "volumes");
    refused("    volumes: [\"data:relative\"]", "absolute");
    refused("    volumes: [\"data:/x:rx\"]", "rx");
    refused(
        "    volumes: [{type: npipe, source: a, target: /a}]",
        "npipe",
    );
}

#[test]
fn docker_needs_are_refused_naming_the_service() {
    let text = "services:\n  app:\n    build: .\n    image: x\n";
    let err = read(text).unwrap_err();
    assert!(
        err.contains("services.app.build") && err.contains("without Docker"),
        "{err}"
    );
    for socket in [
        "/var/run/docker.sock",
        "/run/docker.sock",
        "/run/podman/podman.sock",
    ] {
        let err =
            service(&format!("    volumes: [\"{socket}:/var/run/docker.sock\"]")).unwrap_err();
        assert!(
            err.contains("services.s") && err.contains("without Docker"),
            "{err}"
        );
    }
}

#[test]
fn host_access_keys() {
    let cases = [
        ("    privileged: true", "privileged"),
        ("    network_mode: host", "network_mode: host"),
        ("    pid: host", "pid: host"),
        ("    ipc: host", "ipc: host"),
        ("    cgroup_parent: my.slice", "cgroup_parent"),
        ("    devices: [\"/dev/null:/dev/x\"]", "devices"),
        ("    volumes: [\"/etc/ssl:/etc/ssl:ro\"]", "/etc/ssl"),
    ];
    for (body, key) in cases {
        let keys = service(body).unwrap().host_access();
        assert!(keys.iter().any(|k| k.contains(key)), "{body}: {keys:?}");
    }
    assert!(
        service("    network_mode: bridge\n    ipc: private")
            .unwrap()
            .host_access()
            .is_empty()
    );
    refused("    network_mode: none", "network_mode");
    refused("    pid: container:x", "pid");
}

#[test]
fn every_run_setting_is_typed() {
    let s = service(
        r#"    command: sh -c "echo 'hi there'"
    entrypoint: ["/init", "--"]
    user: "1000:1000"
    working_dir: /app
    hostname: h
    domainname: example.org
    tty: true
    stdin_open: true
    init: true
    labels: [a=b]
    environment: [A=1, B]
    tmpfs: /run
    shm_size: 256m
    read_only: true
    ulimits: {nofile: {soft: 2048, hard: 4096}, nproc: 100}
    sysctls: {net.core.somaxconn: 1024}
    extra_hosts: ["gw:10.0.0.1", "v6=[::1]"]
    dns: 9.9.9.9
    dns_search: [example.org]
    restart: on-failure:3
    deploy: {resources: {limits: {cpus: "0.5", memory: 64M, pids: 50}, reservations: {memory: 32M}}}
    memswap_limit: 128m
    cpu_shares: 512
    cap_add: [NET_ADMIN]
    cap_drop: [CAP_NET_RAW]
    security_opt: ["no-new-privileges:false", "seccomp=unconfined", "apparmor=unconfined", "label=disable"]
    container_name: blog-app
    links: ["db:database"]
    networks: {default: {aliases: [web-alias]}, other: null}
    expose: ["8000-8001", 9000]
    logging: {driver: json-file, options: {max-size: 10m}}
    profiles: []
    platform: linux/amd64
    pull_policy: always
    stop_signal: 15"#,
    )
    .unwrap();
    assert_eq!(
        s.command.as_deref().unwrap(),
        ["sh", "-c", "echo 'hi there'"]
    );
    assert_eq!(s.entrypoint.as_deref().unwrap(), ["/init", "--"]);
    assert_eq!(s.user.as_deref(), Some("1000:1000"));
    assert_eq!(s.working_dir.as_deref(), Some("/app"));
    assert_eq!(
        (s.hostname.as_deref(), s.domainname.as_deref()),
        (Some("h"), Some("example.org"))
    );
    assert!(s.tty && s.stdin_open && s.init && s.read_only);
    assert_eq!(s.labels, [("a".to_string(), "b".to_string())]);
    assert_eq!(
        s.environment,
        [("A".into(), "1".into()), ("B".into(), String::new())]
    );
    assert_eq!(s.tmpfs, ["/run"]);
    assert_eq!(s.shm_size, Some(256 << 20));
    assert_eq!(s.ulimits["nofile"], (2048, 4096));
    assert_eq!(s.ulimits["nproc"], (100, 100));
    assert_eq!(s.sysctls, [("net.core.somaxconn".into(), "1024".into())]);
    assert_eq!(
        s.extra_hosts,
        [
            ("gw".into(), "10.0.0.1".into()),
            ("v6".into(), "::1".into())
        ]
    );
    assert_eq!(
        (s.dns.as_slice(), s.dns_search.as_slice()),
        (
            &["9.9.9.9".to_string()][..],
            &["example.org".to_string()][..]
        )
    );
    assert_eq!(s.restart, Restart::OnFailure(Some(3)));
    let limits = s.limits();
    assert_eq!(limits.memory, Some(64 << 20));
    assert_eq!(
        (limits.cpus, limits.pids, limits.cpu_shares),
        (Some(0.5), Some(50), Some(512))
    );
    assert_eq!(limits.memory_swap, Some(128 << 20));
    assert_eq!(s.cap_add, ["NET_ADMIN"]);
    assert_eq!(
        s.security_opt,
        SecurityOpt {
            no_new_privileges: Some(false),
            seccomp_unconfined: true,
            apparmor: Some("unconfined".into())
        }
    );
    assert_eq!(s.expose, [8000, 8001, 9000]);
    assert_eq!(s.stop_signal, Some(15));
    let compose = read(
        "services:\n  web:\n    image: a\n    container_name: blog-app\n    links: [\"db:database\"]\n    networks: {default: {aliases: [web-alias]}}\n  db:\n    image: b\n    networks: [default]\nnetworks:\n  default: {name: websoft9, external: true}\n",
    )
    .unwrap();
    assert_eq!(
        compose.host_names(),
        ["db", "web", "blog-app", "web-alias", "database"]
    );
}

#[test]
fn key_refusals() {
    refused("    sysctls: {kernel.panic: 1}", "namespaced");
    refused("    ulimits: {nofiles: 10}", "nofiles");
    refused("    ulimits: {nofile: {soft: 10, hard: 5}}", "soft");
    refused("    restart: sometimes", "restart");
    refused("    restart: on-failure:x", "restart");
    refused("    security_opt: [seccomp=/p.json]", "security_opt");
    refused("    cap_add: [FLY]", "FLY");
    refused("    shm_size: lots", "shm_size");
    refused("    extra_hosts: [\"gw:nowhere\"]", "extra_hosts");
    refused(
        "    depends_on: {x: {condition: service_done}}",
        "depends_on",
    );
    refused("    healthcheck: {test: [RUN, x]}", "healthcheck");
    refused("    runtime: nvidia", "runc");
    refused("    cgroup: shared", "cgroup");
    refused(
        "    deploy: {restart_policy: {condition: sometimes}}",
        "condition",
    );
    refused("    configs: [nowhere]", "nowhere");
    refused("    tty: maybe", "tty");
    refused("    devices: [\"dev/x\"]", "devices");
    refused("    env_file: /etc/environment", "env_file");
}

#[test]
fn restart_and_health_forms() {
    assert_eq!(service("    restart: \"no\"").unwrap().restart, Restart::No);
    assert_eq!(
        service("    restart: always").unwrap().restart,
        Restart::Always
    );
    assert_eq!(
        service("    restart: unless-stopped").unwrap().restart,
        Restart::UnlessStopped
    );
    assert_eq!(
        service("    restart: on-failure").unwrap().restart,
        Restart::OnFailure(None)
    );
    let check = |body| service(body).unwrap().healthcheck.unwrap();
    assert!(
        check("    healthcheck: {test: [CMD, x], disable: true}")
            .args()
            .is_none()
    );
    assert!(check("    healthcheck: {test: [NONE]}").args().is_none());
    assert_eq!(
        check("    healthcheck: {test: \"curl -f x\"}")
            .args()
            .unwrap(),
        ["/bin/sh", "-c", "curl -f x"]
    );
    let c = check(
        "    healthcheck: {test: [CMD-SHELL, a, b], start_period: 1m, start_interval: 500ms, timeout: 1.5s}",
    );
    assert_eq!(c.args().unwrap(), ["/bin/sh", "-c", "a b"]);
    assert_eq!(
        (c.start_period, c.start_interval, c.timeout),
        (
            Some(Duration::from_secs(60)),
            Some(Duration::from_millis(500)),
            Some(Duration::from_millis(1500))
        )
    );
    let d =
        service("    depends_on: {x: {condition: service_completed_successfully, restart: true}}");
    // x is no service here: the condition parses, the reference does not.
    assert!(d.unwrap_err().contains("no service \"x\""));
}

#[test]
fn profiles_leave_a_service_out() {
    let text = "services:\n  web:\n    image: a\n    ports: [\"80\"]\n  debug:\n    image: b\n    profiles: [debug]\n";
    let compose = read(text).unwrap();
    assert_eq!(compose.services.keys().collect::<Vec<_>>(), ["web"]);
    let text = text.replace("    ports: [\"80\"]", "    depends_on: [debug]");
    assert!(read(&text).unwrap_err().contains("profiles"));
}

#[test]
fn env_file_and_environment() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("app.env"),
        "# comment\nA=from file\nB=\"quoted \\\"x\\\"\"\nexport C='single'\nD=plain # note\n",
    )
    .unwrap();
    let text = "services:\n  s:\n    image: a\n    env_file: [app.env, {path: missing.env, required: false}]\n    environment: {D: override}\n";
    let compose = read_in(text, dir.path()).unwrap();
    assert_eq!(
        compose.services["s"].environment,
        [
            ("A".to_string(), "from file".to_string()),
            ("B".into(), "quoted \"x\"".into()),
            ("C".into(), "single".into()),
            ("D".into(), "override".into()),
        ]
    );
    let err = read_in(
        "services:\n  s:\n    image: a\n    env_file: nope.env\n",
        dir.path(),
    )
    .unwrap_err();
    assert!(
        err.contains("services.s.env_file") && err.contains("nope.env"),
        "{err}"
    );
}

#[test]
fn sizes_durations_signals() {
    assert_eq!(parse_bytes("64m"), Ok(64 << 20));
    assert_eq!(parse_bytes("1.5GB"), Ok(3 << 29));
    assert_eq!(parse_bytes("100k"), Ok(100 << 10));
    assert_eq!(parse_bytes("2048"), Ok(2048));
    assert!(parse_bytes("12q").is_err());
    assert_eq!(parse_duration("1h2m3s"), Ok(Duration::from_secs(3723)));
    assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    assert!(parse_duration("10").is_err());
    assert_eq!(parse_signal("SIGKILL"), Ok(9));
    assert_eq!(parse_signal("HUP"), Ok(1));
    assert_eq!(parse_signal("2"), Ok(2));
    assert!(parse_signal("SIGNOPE").is_err());
}

#[test]
fn port_collisions_name_both_services() {
    let text = "services:\n  a:\n    image: x\n    ports: [\"8080:80\"]\n  b:\n    image: x\n    expose: [80]\n  c:\n    image: x\n    ports: [\"53:53/udp\"]\n    expose: [53]\n";
    let compose = read(text).unwrap();
    assert_eq!(
        compose.port_collisions(),
        [(80, "tcp", "a".to_string(), "b".to_string())]
    );
}

#[test]
fn keys_docker_honours_beyond_the_table() {
    // Docker Compose: deploy's restart_policy wins over `restart`; `none` is `no`.
    let policy = "    restart: always\n    deploy: {restart_policy: {condition: on-failure, max_attempts: 3, delay: 5s}, mode: global}";
    assert_eq!(
        service(policy).unwrap().restart,
        Restart::OnFailure(Some(3))
    );
    assert_eq!(
        service("    deploy: {restart_policy: {}}").unwrap().restart,
        Restart::Always
    );
    assert_eq!(service("    restart: none").unwrap().restart, Restart::No);
    // Accepted as Docker on Linux leaves them: cpu_percent discarded, attach for the CLI.
    service("    cpu_percent: 50\n    attach: false\n    runtime: runc").unwrap();
    // The image's own check: as a service without `healthcheck`.
    assert!(
        service("    healthcheck: {interval: 1s}")
            .unwrap()
            .healthcheck
            .unwrap()
            .args()
            .is_none()
    );
    let keys = service("    cgroup: host").unwrap().host_access();
    assert_eq!(keys, ["cgroup: host"]);
    let s = service(
        "    volumes: [\"kopia:/tmp:shared\", \".env:/app/.env:z\"]\n    ports: [\"51413:51413/UDP\"]\n    extra_hosts: [\"host.docker.internal:host-gateway\"]",
    );
    let err = s.unwrap_err();
    assert!(err.contains("kopia"), "undeclared volume: {err}");
    let s = service(
        "    volumes: [\"data:/tmp:shared\", \".env:/app/.env:z\"]\n    ports: [\"51413:51413/UDP\"]\n    extra_hosts: [\"host.docker.internal:host-gateway\"]",
    )
    .unwrap();
    assert_eq!(s.volumes[1].source, MountSource::AppFolder(".env".into()));
    assert_eq!(s.ports[0].protocol, "udp");
    assert_eq!(s.extra_hosts[0].1, HOST_GATEWAY);
}

#[test]
fn configs_and_local_driver_volumes() {
    let text = r#"
services:
  s:
    image: reg/x:1
    configs: [cmd, {source: conf, target: /etc/x.conf}]
    volumes: ["scratch:/run/x", "site:/srv", "kept:/kept"]
configs:
  cmd: {file: ./cmd.sh}
  conf: {content: "listen ${PORT:-80}"}
volumes:
  scratch: {driver_opts: {type: tmpfs, device: tmpfs, o: "size=1m"}}
  site: {driver: local, driver_opts: {type: none, o: bind, device: /srv/site}}
  kept: {external: false}
"#;
    let compose = read(text).unwrap();
    let s = &compose.services["s"];
    let sources: Vec<_> = s
        .volumes
        .iter()
        .map(|m| (&m.source, m.target.clone()))
        .collect();
    assert_eq!(
        sources,
        [
            (
                &MountSource::Tmpfs {
                    size: Some(1 << 20),
                    mode: None
                },
                "/run/x".into()
            ),
            (&MountSource::Host("/srv/site".into()), "/srv".into()),
            (&MountSource::Named("kept".into()), "/kept".into()),
            (&MountSource::AppFolder("cmd.sh".into()), "/cmd".into()),
            (
                &MountSource::Text {
                    name: "conf".into(),
                    text: "listen 80".into()
                },
                "/etc/x.conf".into()
            ),
        ]
    );
    assert!(s.volumes[3].read_only && s.volumes[4].read_only);
    assert_eq!(compose.volumes.iter().collect::<Vec<_>>(), ["kept"]);
    assert_eq!(compose.host_access(), ["s: volumes: /srv/site"]);
    for (volume, named) in [
        ("{external: true}", "external"),
        ("{driver_opts: {type: nfs, device: \":/x\"}}", "nfs"),
    ] {
        let err = read(&text.replace("{external: false}", volume)).unwrap_err();
        assert!(err.contains("volumes.kept") && err.contains(named), "{err}");
    }
}

#[test]
fn a_web_service_on_the_host_network_is_its_own_port() {
    let text = "services:\n  web:\n    image: reg/x:1\n    network_mode: host\n    ports: [\"9999:8123\"]\n";
    let compose = read(text).unwrap();
    compose.validate("web", 8123, 8123).unwrap();
    let err = compose.validate("web", 8123, 9001).unwrap_err();
    assert!(err.contains("host's network"), "{err}");
}
