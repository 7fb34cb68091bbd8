"""A kubelet for tests/k8s/podsim.py: runs a Pod object, as stored by the API server (tests/k8s/apiserver.py),
on this machine, with each container in its own mount and PID namespaces (tests/k8s/runtime.py).

What it does as the kubelet does, and fails on otherwise (naming the pod, the volume or the container):
- Volumes resolve in the pod's namespace, through the API: a Secret or ConfigMap must exist there (unless
  `optional`); a projected serviceAccountToken is minted with TokenRequest for the pod's service account, the
  volume's audience and expirationSeconds, bound to the pod; downwardAPI items come from the pod; emptyDir is
  an empty directory (mode 0777). Any other volume type fails.
- Modes and owners: defaultMode (0644 unless given) and per-item modes; a projected token is 0600 when the
  pod has an fsGroup or all its containers one runAsUser (that user then owns it); with an fsGroup, every
  volume gets the group, read (or read-write for emptyDir) for it and setgid on directories
  (volume.SetVolumeOwnership).
- Environment: the service variables of the `kubernetes` Service (and of the namespace's Services, with
  enableServiceLinks), the container's env in order with $(VAR) expansion, valueFrom fieldRef,
  secretKeyRef and configMapKeyRef; then what the container runtime adds: PATH (the image's), HOSTNAME, HOME.
  `command` and `args` replace the image's ENTRYPOINT and CMD as Kubernetes says, $(VAR)s expanded.
- The user: runAsUser/runAsGroup of the container, else of the pod, else the image's USER; runAsNonRoot
  refuses root; fsGroup and supplementalGroups are the process's groups; readOnlyRootFilesystem,
  allowPrivilegeEscalation: false (no_new_privs) and capabilities.drop ALL are applied.
- /etc/hosts is the pod's (localhost, the pod's IP and name) plus the cluster's DNS records as the pod's
  search path would resolve them (simulated DNS); /etc/resolv.conf names a server that does not exist, so
  any other name fails to resolve at once.
- Probes: httpGet (port by number or name, HTTP or HTTPS without verification, on the pod's IP) and
  tcpSocket, with periodSeconds, failureThreshold, timeoutSeconds; other handlers fail.
- Native sidecars (init containers with restartPolicy Always) start first and hold the next container back
  until their startup probe passes; other init containers run to completion in order; then the containers.

Each container's stdout and stderr go to files under the log directory.
"""
import base64
import http.client
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RUNTIME = os.path.join(HERE, "runtime.py")
PR_SET_PDEATHSIG = 1
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
EMPTY_DIR_MODE = 0o777


class PodFailure(Exception):
    """The pod could not be set up or run as specified (what the kubelet would report as an event)."""


def expand(text, env):
    """Kubernetes' $(VAR) expansion: $(NAME) of a defined variable is replaced, $$ is a literal $, anything
    else is left as written."""
    out, i = [], 0
    while i < len(text):
        if text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("$(", i) and ")" in text[i + 2:]:
            end = text.index(")", i + 2)
            name = text[i + 2:end]
            out.append(env[name] if name in env else text[i:end + 1])
            i = end + 1
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


class Image:
    """A simulated image: this machine's userland, plus `files` ({path in the image: host path}, bound
    read-only) and `links` ({path: symlink target}), with the ENTRYPOINT, CMD and USER it declares."""

    def __init__(self, entrypoint=(), cmd=(), user=None, files=None, links=None, env_path=DEFAULT_PATH):
        self.entrypoint, self.cmd, self.user = list(entrypoint), list(cmd), user
        self.files, self.links, self.env_path = dict(files or {}), dict(links or {}), env_path


class ContainerProcess:
    def __init__(self, pod, container, proc, stdout, stderr):
        self.pod, self.container, self.proc = pod, container, proc
        self.name = container["name"]
        self.stdout_path, self.stderr_path = stdout, stderr
        self.started = time.monotonic()

    def running(self):
        return self.proc.poll() is None

    def wait(self, timeout):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise PodFailure(f"pod {self.pod.ref}: container {self.name} still running after {timeout} s "
                             f"(killed); its stderr:\n{self.stderr()[-3000:]}")

    def stop(self, grace=10):
        """SIGTERM, then SIGKILL after `grace` seconds; returns the exit code."""
        if self.running():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        self.kill()
        return self.proc.returncode

    def kill(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass

    def stdout(self):
        with open(self.stdout_path, errors="replace") as f:
            return f.read()

    def stderr(self):
        with open(self.stderr_path, errors="replace") as f:
            return f.read()


class Kubelet:
    """One node. `api` is a support.Client with the stand-in's admin token; `images` maps an image repository
    (without tag or digest) to an Image, `""` being every other image; `cluster_dns` is {FQDN of a Service:
    IP}; `extra_hosts(pod, container)` may add /etc/hosts lines for one container (the test's device for
    names only Keyward's sidecar resolves); `service_env(namespace)` gives the service variables."""

    def __init__(self, api, *, node_dir, log_dir, images, cluster_dns, service_env, nameserver,
                 extra_hosts=None, image_mounts=None):
        self.api, self.node_dir, self.log_dir = api, node_dir, log_dir
        self.images, self.cluster_dns, self.service_env = images, cluster_dns, service_env
        self.nameserver = nameserver
        self.extra_hosts = extra_hosts or (lambda pod, container: [])
        self.image_mounts = image_mounts or (lambda pod, container: [])
        self.processes = []
        os.makedirs(node_dir, exist_ok=True)
        os.makedirs(log_dir, exist_ok=True)

    def image(self, reference):
        repository = re.split(r"@", reference)[0]
        if ":" in repository.rsplit("/", 1)[-1]:
            repository = repository.rsplit(":", 1)[0]
        return self.images.get(repository) or self.images[""]

    def pod(self, obj, ip, name=None):
        return Pod(self, obj, ip, name)

    def kill_all(self):
        for p in self.processes:
            p.kill()


class Pod:
    def __init__(self, kubelet, obj, ip, label=None):
        self.kubelet, self.obj, self.ip = kubelet, obj, ip
        self.meta, self.spec = obj["metadata"], obj["spec"]
        self.ns, self.name = self.meta["namespace"], self.meta["name"]
        self.ref = f"{self.ns}/{self.name}"
        self.label = label or self.name
        self.dir = os.path.join(kubelet.node_dir, "pods", self.meta["uid"])
        self.logs = os.path.join(kubelet.log_dir, self.label)
        self.volumes = {}  # name -> (host path, kind)
        self.processes = {}
        os.makedirs(self.dir, exist_ok=True)
        os.makedirs(self.logs, exist_ok=True)

    # ---- what the API holds in the pod's namespace ------------------------------------------------
    def _get(self, plural, name):
        status, obj = self.kubelet.api.request("GET", f"/api/v1/namespaces/{self.ns}/{plural}/{name}")
        if status == 404:
            return None
        if status != 200:
            raise PodFailure(f"pod {self.ref}: GET {plural}/{name}: HTTP {status} {obj}")
        return obj

    def _token(self, volume, audience, seconds):
        request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                   "spec": {"expirationSeconds": seconds,
                            "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": self.name,
                                               "uid": self.meta["uid"]}}}
        if audience:
            request["spec"]["audiences"] = [audience]
        sa = self.spec.get("serviceAccountName") or "default"
        status, answer = self.kubelet.api.request(
            "POST", f"/api/v1/namespaces/{self.ns}/serviceaccounts/{sa}/token", request)
        if status != 201:
            raise PodFailure(f"pod {self.ref}: volume {volume}: TokenRequest for service account {sa} "
                             f"(audience {audience or 'the API'}): HTTP {status} {answer}")
        return answer["status"]["token"]

    def field(self, path, what):
        m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
        if m:
            return (self.meta.get(m.group(1)) or {}).get(m.group(2), "")
        values = {"metadata.name": self.name, "metadata.namespace": self.ns, "metadata.uid": self.meta["uid"],
                  "spec.serviceAccountName": self.spec.get("serviceAccountName", "default"),
                  "spec.nodeName": "podsim-node", "status.podIP": self.ip, "status.podIPs": self.ip,
                  "status.hostIP": "127.0.0.1", "status.hostIPs": "127.0.0.1"}
        if path in ("metadata.labels", "metadata.annotations"):
            items = self.meta.get(path.split(".")[1]) or {}
            return "\n".join(f'{k}="{v}"' for k, v in sorted(items.items()))
        if path not in values:
            raise PodFailure(f"pod {self.ref}: {what}: fieldRef {path} is not supported")
        return values[path]

    # ---- volumes ---------------------------------------------------------------------------------
    def fs_user(self):
        """kubelet's FsUserFrom: the runAsUser every container shares, else None."""
        pod_sc = self.spec.get("securityContext") or {}
        users = set()
        for c in self.all_containers():
            user = (c.get("securityContext") or {}).get("runAsUser", pod_sc.get("runAsUser"))
            if user is None:
                return None
            users.add(user)
        return users.pop() if len(users) == 1 else None

    def all_containers(self):
        return list(self.spec.get("initContainers") or []) + list(self.spec.get("containers") or [])

    def _write(self, root, path, data, mode, volume, owner=None):
        if path.startswith("/") or ".." in path.split("/"):
            raise PodFailure(f"pod {self.ref}: volume {volume}: item path {path!r} is not relative")
        full = os.path.join(root, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as f:
            f.write(data)
        os.chmod(full, mode)
        if owner is not None:
            os.chown(full, owner, -1)

    def _keys(self, volume, kind, name, obj, items, optional, default_mode, root):
        if obj is None:
            if optional:
                return
            raise PodFailure(f"pod {self.ref}: volume {volume}: {kind} {name!r} not found in namespace {self.ns} "
                             f"(volumes resolve in the pod's namespace)")
        if kind == "Secret":
            data = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
        else:
            data = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
            data.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
        if items:
            for item in items:
                if item["key"] not in data:
                    if optional:
                        continue
                    raise PodFailure(f"pod {self.ref}: volume {volume}: {kind} {name!r} has no key "
                                     f"{item['key']!r}")
                self._write(root, item["path"], data[item["key"]], item.get("mode", default_mode), volume)
        else:
            for key, value in data.items():
                self._write(root, key, value, default_mode, volume)

    def _downward(self, volume, items, default_mode, root):
        for item in items or []:
            if "fieldRef" in item:
                value = self.field(item["fieldRef"]["fieldPath"], f"volume {volume}")
            else:
                raise PodFailure(f"pod {self.ref}: volume {volume}: downwardAPI item {item} is not supported")
            self._write(root, item["path"], value.encode(), item.get("mode", default_mode), volume)

    def setup_volumes(self):
        pod_sc = self.spec.get("securityContext") or {}
        fs_group, fs_user = pod_sc.get("fsGroup"), self.fs_user()
        names = set()
        for v in self.spec.get("volumes") or []:
            name = v["name"]
            if name in names:
                raise PodFailure(f"pod {self.ref}: two volumes named {name}")
            names.add(name)
            root = os.path.join(self.dir, "volumes", name)
            os.makedirs(root)
            kinds = [k for k in v if k != "name"]
            kind = kinds[0] if len(kinds) == 1 else None
            read_only = True
            if kind == "emptyDir":
                os.chmod(root, EMPTY_DIR_MODE)
                read_only = False
            elif kind in ("secret", "configMap"):
                src = v[kind]
                ref = src.get("secretName") if kind == "secret" else src.get("name")
                obj = self._get("secrets" if kind == "secret" else "configmaps", ref)
                self._keys(name, "Secret" if kind == "secret" else "ConfigMap", ref, obj, src.get("items"),
                           src.get("optional", False), src.get("defaultMode", 0o644), root)
            elif kind == "downwardAPI":
                self._downward(name, v[kind].get("items"), v[kind].get("defaultMode", 0o644), root)
            elif kind == "projected":
                mode = v[kind].get("defaultMode", 0o644)
                for source in v[kind].get("sources") or []:
                    if "serviceAccountToken" in source:
                        t = source["serviceAccountToken"]
                        token = self._token(name, t.get("audience"), t.get("expirationSeconds", 3600))
                        token_mode = 0o600 if (fs_user is not None or fs_group is not None) else mode
                        self._write(root, t["path"], token.encode(), token_mode, name, owner=fs_user)
                    elif "configMap" in source or "secret" in source:
                        k = "configMap" if "configMap" in source else "secret"
                        src = source[k]
                        ref = src["name"]
                        obj = self._get("configmaps" if k == "configMap" else "secrets", ref)
                        self._keys(name, "ConfigMap" if k == "configMap" else "Secret", ref, obj,
                                   src.get("items"), src.get("optional", False), mode, root)
                    elif "downwardAPI" in source:
                        self._downward(name, source["downwardAPI"].get("items"), mode, root)
                    else:
                        raise PodFailure(f"pod {self.ref}: volume {name}: projected source {sorted(source)} is "
                                         "not simulated")
            else:
                raise PodFailure(f"pod {self.ref}: volume {name}: {kinds} is not a volume this simulation can "
                                 "resolve in the pod's namespace (emptyDir, secret, configMap, projected, "
                                 "downwardAPI)")
            if fs_group is not None:  # volume.SetVolumeOwnership
                for dirpath, dirnames, filenames in os.walk(root):
                    for entry in [dirpath] + [os.path.join(dirpath, f) for f in filenames]:
                        st = os.lstat(entry)
                        os.lchown(entry, -1, fs_group)
                        mask = 0o440 if read_only else 0o660
                        if os.path.isdir(entry):
                            mask |= 0o2000 | 0o110
                        os.chmod(entry, (st.st_mode & 0o7777) | mask)
            self.volumes[name] = root

    # ---- containers ------------------------------------------------------------------------------
    def hosts_file(self, container):
        lines = ["# Kubernetes-managed hosts file (podsim: with the cluster's DNS records as this pod resolves them)",
                 "127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
                 f"{self.ip}\t{self.spec.get('hostname', self.name)}"]
        for fqdn, ip in sorted(self.kubelet.cluster_dns.items()):
            parts = fqdn.split(".")  # name.namespace.svc.cluster.local
            names = [fqdn, ".".join(parts[:3]), ".".join(parts[:2])]
            if parts[1] == self.ns:
                names.append(parts[0])
            lines.append(f"{ip}\t{' '.join(names)}")
        lines += self.kubelet.extra_hosts(self, container)
        return "\n".join(lines) + "\n"

    def resolv_conf(self):
        return (f"nameserver {self.kubelet.nameserver}\n"
                f"search {self.ns}.svc.cluster.local svc.cluster.local cluster.local\n"
                "options ndots:5 timeout:1 attempts:1\n")

    def environment(self, container, image):
        what = f"container {container['name']}"
        env = {}
        for source in container.get("envFrom") or []:
            for key, kind in (("configMapRef", "configmaps"), ("secretRef", "secrets")):
                if key in source:
                    obj = self._get(kind, source[key]["name"])
                    if obj is None:
                        if source[key].get("optional"):
                            continue
                        raise PodFailure(f"pod {self.ref}: {what}: envFrom {kind} {source[key]['name']!r} not "
                                         f"found in namespace {self.ns}")
                    for k, v in (obj.get("data") or {}).items():
                        env[source.get("prefix", "") + k] = base64.b64decode(v).decode() if kind == "secrets" else v
        services = dict(self.kubelet.service_env(self.ns, self.spec.get("enableServiceLinks", True)))
        for e in container.get("env") or []:
            if "value" in e or "valueFrom" not in e:
                env[e["name"]] = expand(e.get("value", ""), {**services, **env})
                continue
            source = e["valueFrom"]
            if "fieldRef" in source:
                env[e["name"]] = self.field(source["fieldRef"]["fieldPath"], f"{what} env {e['name']}")
            elif "secretKeyRef" in source or "configMapKeyRef" in source:
                key = "secretKeyRef" if "secretKeyRef" in source else "configMapKeyRef"
                ref = source[key]
                obj = self._get("secrets" if key == "secretKeyRef" else "configmaps", ref["name"])
                data = (obj or {}).get("data") or {}
                if ref["key"] not in data:
                    if ref.get("optional"):
                        continue
                    raise PodFailure(f"pod {self.ref}: {what} env {e['name']}: {key} {ref['name']}/{ref['key']} "
                                     f"not found in namespace {self.ns}")
                value = data[ref["key"]]
                env[e["name"]] = base64.b64decode(value).decode() if key == "secretKeyRef" else value
            else:
                raise PodFailure(f"pod {self.ref}: {what} env {e['name']}: {sorted(source)} is not supported")
        for k, v in services.items():
            env.setdefault(k, v)
        return env

    def user(self, container, image):
        pod_sc = self.spec.get("securityContext") or {}
        sc = container.get("securityContext") or {}
        image_uid, image_gid = (image.user or (0, None))
        uid = sc.get("runAsUser", pod_sc.get("runAsUser", image_uid))
        gid = sc.get("runAsGroup", pod_sc.get("runAsGroup", image_gid if image_gid is not None else 0))
        if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) and uid == 0:
            raise PodFailure(f"pod {self.ref}: container {container['name']} has runAsNonRoot and would run as "
                             "root (CreateContainerConfigError)")
        groups = list(pod_sc.get("supplementalGroups") or [])
        if pod_sc.get("fsGroup") is not None:
            groups.append(pod_sc["fsGroup"])
        return uid, gid, groups, sc

    def start(self, container, extra_env=None):
        """Starts one container (its volumes set up first); returns its ContainerProcess."""
        name = container["name"]
        image = self.kubelet.image(container.get("image", ""))
        env = self.environment(container, image)
        env.setdefault("PATH", image.env_path)
        env.setdefault("HOSTNAME", self.spec.get("hostname", self.name))
        uid, gid, groups, sc = self.user(container, image)
        env.setdefault("HOME", "/root" if uid == 0 else "/")
        env.update(extra_env or {})
        if container.get("command"):
            argv = list(container["command"]) + list(container.get("args") or [])
        elif container.get("args"):
            argv = image.entrypoint + list(container["args"])
        else:
            argv = image.entrypoint + image.cmd
        if not argv:
            raise PodFailure(f"pod {self.ref}: container {name}: no command and no image entrypoint")
        argv = [expand(a, env) for a in argv]
        cdir = os.path.join(self.dir, "containers", name)
        os.makedirs(cdir, exist_ok=True)
        for fname, text in (("hosts", self.hosts_file(container)), ("resolv.conf", self.resolv_conf()),
                            ("hostname", self.spec.get("hostname", self.name) + "\n")):
            with open(os.path.join(cdir, fname), "w") as f:
                f.write(text)
            os.chmod(os.path.join(cdir, fname), 0o644)
        mounts = [{"source": os.path.join(cdir, f), "target": f"/etc/{f}", "readOnly": False}
                  for f in ("hosts", "resolv.conf", "hostname")]
        mounts += [{"source": src, "target": path, "readOnly": True} for path, src in image.files.items()]
        mounts += self.kubelet.image_mounts(self, container)
        for m in container.get("volumeMounts") or []:
            if m["name"] not in self.volumes:
                raise PodFailure(f"pod {self.ref}: container {name}: volumeMount {m['mountPath']} names volume "
                                 f"{m['name']!r}, which the pod does not have")
            source = self.volumes[m["name"]]
            if m.get("subPath"):
                source = os.path.join(source, m["subPath"])
                if not os.path.exists(source):
                    os.makedirs(source)
            mounts.append({"source": source, "target": m["mountPath"], "readOnly": bool(m.get("readOnly"))})
        targets = [m["target"] for m in mounts]
        if len(set(targets)) != len(targets):
            raise PodFailure(f"pod {self.ref}: container {name}: two mounts at one path {targets}")
        scratch = os.path.join(cdir, "scratch")
        os.makedirs(scratch, exist_ok=True)
        spec = {
            "mounts": mounts, "symlinks": [{"target": t, "link": l} for t, l in image.links.items()],
            "readOnlyRoot": bool(sc.get("readOnlyRootFilesystem")),
            "user": None if (uid == 0 and not groups and gid == 0) else {"uid": uid, "gid": gid, "groups": groups},
            "noNewPrivs": sc.get("allowPrivilegeEscalation") is False,
            "dropCapabilities": "ALL" in ((sc.get("capabilities") or {}).get("drop") or []),
            "argv": argv, "env": env, "cwd": container.get("workingDir") or "/", "scratch": scratch,
        }
        spec_path = os.path.join(cdir, "runtime.json")
        with open(spec_path, "w") as f:
            json.dump(spec, f)
        os.chmod(spec_path, 0o600)
        stdout = os.path.join(self.logs, f"{name}.stdout.log")
        stderr = os.path.join(self.logs, f"{name}.stderr.log")

        def pdeathsig():
            import ctypes
            ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)

        with open(stdout, "wb") as out, open(stderr, "wb") as err:
            proc = subprocess.Popen([sys.executable, RUNTIME, spec_path], stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=err, start_new_session=True, preexec_fn=pdeathsig)
        p = ContainerProcess(self, container, proc, stdout, stderr)
        p.env, p.argv, p.uid, p.gid, p.groups = env, argv, uid, gid, groups
        self.processes[name] = p
        self.kubelet.processes.append(p)
        return p

    # ---- probes ----------------------------------------------------------------------------------
    def probe_once(self, container, probe):
        timeout = probe.get("timeoutSeconds", 1)
        if "httpGet" in probe:
            h = probe["httpGet"]
            port = self._port(container, h["port"])
            host = h.get("host") or self.ip
            if h.get("scheme", "HTTP").upper() == "HTTPS":
                conn = http.client.HTTPSConnection(host, port, timeout=timeout,
                                                   context=ssl._create_unverified_context())
            else:
                conn = http.client.HTTPConnection(host, port, timeout=timeout)
            try:
                conn.request("GET", h.get("path", "/"),
                             headers={x["name"]: x["value"] for x in h.get("httpHeaders") or []})
                status = conn.getresponse().status
                return 200 <= status < 400, f"HTTP {status}"
            except OSError as e:
                return False, str(e)
            finally:
                conn.close()
        if "tcpSocket" in probe:
            port = self._port(container, probe["tcpSocket"]["port"])
            try:
                socket.create_connection((probe["tcpSocket"].get("host") or self.ip, port), timeout=timeout).close()
                return True, "connected"
            except OSError as e:
                return False, str(e)
        raise PodFailure(f"pod {self.ref}: container {container['name']}: probe {sorted(probe)} not simulated")

    def _port(self, container, port):
        if isinstance(port, int):
            return port
        for p in container.get("ports") or []:
            if p.get("name") == port:
                return p["containerPort"]
        raise PodFailure(f"pod {self.ref}: container {container['name']}: probe port {port!r} names no port")

    def wait_probe(self, process, kind, limit):
        """Waits until the container's `kind` probe (startupProbe, readinessProbe) passes, within the probe's
        own budget and at most `limit` seconds; fails with the container's log otherwise."""
        container = process.container
        probe = container.get(kind)
        if probe is None:
            return 0.0
        period = probe.get("periodSeconds", 10)
        budget = probe.get("initialDelaySeconds", 0) + period * probe.get("failureThreshold", 3)
        deadline = process.started + min(budget, limit)
        time.sleep(probe.get("initialDelaySeconds", 0))
        last = ""
        while True:
            if not process.running():
                raise PodFailure(f"pod {self.ref}: container {container['name']} exited ({process.proc.returncode}) "
                                 f"before its {kind} passed; its log:\n{tail(process)}")
            ok, last = self.probe_once(container, probe)
            if ok:
                return time.monotonic() - process.started
            if time.monotonic() >= deadline:
                raise PodFailure(f"pod {self.ref}: container {container['name']}: {kind} did not pass within "
                                 f"{min(budget, limit):.0f} s (last: {last}); its log:\n{tail(process)}")
            # The kubelet probes every periodSeconds; a shorter step here only makes the test faster.
            time.sleep(min(period, 0.2))

    # ---- the pod's lifecycle ----------------------------------------------------------------------
    def start_init(self, limit, init_timeout=30):
        """Init containers in order: native sidecars are started and their startup probe waited for; the
        others run to completion (exit 0). Returns {sidecar name: seconds to pass its startup probe}."""
        started = {}
        for c in self.spec.get("initContainers") or []:
            p = self.start(c)
            if c.get("restartPolicy") == "Always":
                started[c["name"]] = self.wait_probe(p, "startupProbe", limit)
            else:
                code = p.wait(init_timeout)
                if code != 0:
                    raise PodFailure(f"pod {self.ref}: init container {c['name']} exited {code}; its log:\n"
                                     f"{tail(p)}")
        return started

    def stop(self, grace=10):
        """Stops every container: the regular ones first, then the sidecars in reverse order (as the kubelet
        does for native sidecars). Returns {name: exit code}."""
        codes = {}
        inits = [c["name"] for c in self.spec.get("initContainers") or []]
        order = [n for n in self.processes if n not in inits] + [n for n in reversed(inits) if n in self.processes]
        for n in order:
            codes[n] = self.processes[n].stop(grace)
        return codes


def tail(process, lines=40):
    text = (process.stderr() + process.stdout()).strip().splitlines()
    return "\n".join(text[-lines:])

