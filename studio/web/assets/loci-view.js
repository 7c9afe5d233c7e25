// The 3D world view of the Loci studio: Gaussian splats (Spark on three.js) or the mesh (GLB),
// seen from the world's own cameras, with fly and orbit navigation.
//
// Mounted by a gr.HTML component (studio/web/view.py) through mount(element, props, trigger,
// watch). Props (all plain JSON, made by the server):
//   scene: { width, height, scene_depth, cameras: [{c2w: [16], proj: [16]}],   // glTF Y-up frame,
//            splats: {url, matrix: [16]} | null, mesh: {url} | null,          // column-major
//            frames: [{rgb: url, mask: url}], chunks: [{spz: base64, matrix}], message }
//   frame: the camera to show (index into cameras); live: follow the newest camera.
// The view opens at scene.cameras[frame] with that camera's intrinsics (its projection matrix),
// so the splat render lines up with the generated frame; a switch puts the generated frame or
// its source mask over the canvas at the same camera.
//
// Rendering is on demand: a frame is drawn only when the camera moved, a file loaded or Spark
// finished re-sorting (onDirty). Under software WebGL a continuous loop starves the page.
// State for people and tests is on the element: data-state (empty|loading|ready|error|nowebgl),
// data-frame, data-show, data-model, data-settled (count of settled renders).

const VENDOR = new URL("./vendor/loci3d.js", import.meta.url).href;
const SETTLE_MS = 250; // no re-sort for this long after a render: the picture is final
let vendorPromise = null;

function vendor() {
  vendorPromise = vendorPromise || import(VENDOR);
  return vendorPromise;
}

export function hasWebGL2() {
  try {
    return !!document.createElement("canvas").getContext("webgl2");
  } catch (e) {
    return false;
  }
}

// A stored-file URL from the server: absolute, root-relative ("/loci/files/..."), or relative
// to the studio's root ("gradio_api/file=...").
export function resolveUrl(url) {
  if (!url) return url;
  if (/^(https?:|data:|blob:)/.test(url)) return url;
  if (url.startsWith("/")) return new URL(url, location.origin).href;
  const root = ((window.gradio_config && window.gradio_config.root) || location.href.split("?")[0])
    .replace(/\/?$/, "/");
  return new URL(url, root).href;
}

function el(tag, attrs = {}, children = []) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.appendChild(c);
  return e;
}

function b64bytes(b64) {
  const s = atob(b64);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

const SHOW = [
  ["3d", "3D render"],
  ["frame", "Generated frame"],
  ["mask", "Source mask"],
];
const MODEL = [
  ["splats", "Splats"],
  ["mesh", "Mesh"],
];
const NAV = [
  ["fly", "Fly"],
  ["orbit", "Orbit"],
];

class WorldView {
  constructor(host, props, trigger) {
    this.host = host;
    this.props = props;
    this.trigger = trigger;
    this.show = "3d";
    this.model = "splats";
    this.nav = "fly";
    this.frame = 0;
    this.scene = null;
    this.dirty = true;
    this.settled = 0;
    this.keys = new Set();
    this.times = {};
    this.loaded = { splats: null, mesh: null };
    this.chunkObjs = [];
    this.chunkIds = new Set();
    this.compact = !!props.compact;
    this.webgl = hasWebGL2();
    this.build();
    if (!this.webgl) {
      this.setState("nowebgl");
      this.message(
        "This browser has no WebGL2, so the 3D view is off. The generated frame and its " +
          "source mask still show here, and the frame panel beside it works as before.",
      );
      this.show = "frame";
      this.syncButtons();
    }
  }

  // ---- DOM -----------------------------------------------------------------------------------
  build() {
    // Our own box inside the component's element: Gradio scopes the component's CSS to
    // descendants of that element.
    this.host.innerHTML = "";
    const r = (this.root = el("div", { class: "loci-view" }));
    this.host.append(r);
    const group = (name, items) =>
      el(
        "span",
        { class: "lv-group", role: "group", "data-group": name },
        items.map(([v, label]) =>
          el("button", { type: "button", "data-value": v, text: label, "aria-pressed": "false" }),
        ),
      );
    this.bar = el("div", { class: "lv-bar" }, [
      group("show", SHOW),
      group("model", MODEL),
      group("nav", NAV),
      el("button", { type: "button", class: "lv-home", text: "⟲ Frame camera", title: "Back to the frame's camera" }),
      el("label", { class: "lv-path" }, [
        el("input", { type: "checkbox", checked: "" }),
        document.createTextNode(" path"),
      ]),
    ]);
    if (this.compact) this.bar.querySelectorAll("[data-group=show],[data-group=model]").forEach((g) => g.remove());
    this.canvas = el("canvas", { class: "lv-canvas", tabindex: "0", "aria-label": "3D view of the world" });
    this.overlay = el("img", { class: "lv-overlay", alt: "", hidden: "" });
    this.overlay.addEventListener("error", () => {
      if (!this.overlay.hidden) this.message('This frame could not load. Press "Load the world" again.');
    });
    this.msg = el("div", { class: "lv-msg" });
    this.stage = el("div", { class: "lv-stage" }, [this.canvas, this.overlay, this.msg]);
    this.status = el("div", { class: "lv-status" });
    r.append(this.bar, this.stage, this.status);
    this.bar.addEventListener("click", (e) => {
      const b = e.target.closest("button");
      if (!b) return;
      const g = b.parentElement.dataset.group;
      if (g === "show") this.setShow(b.dataset.value);
      else if (g === "model") this.setModel(b.dataset.value);
      else if (g === "nav") this.setNav(b.dataset.value);
      else if (b.classList.contains("lv-home")) this.goTo(this.frame, true);
    });
    this.bar.querySelector(".lv-path input").addEventListener("change", (e) => {
      if (this.helpers) this.helpers.visible = e.target.checked;
      this.dirty = true;
    });
    this.setState("empty");
    this.syncButtons();
    this.message("The 3D world shows here once it is loaded.");
  }

  setState(s) {
    this.root.dataset.state = s;
  }

  message(text) {
    this.msg.textContent = text || "";
    this.msg.hidden = !text;
  }

  syncButtons() {
    const on = { show: this.show, model: this.model, nav: this.nav };
    this.bar.querySelectorAll(".lv-group").forEach((g) => {
      g.querySelectorAll("button").forEach((b) => {
        const pressed = on[g.dataset.group] === b.dataset.value;
        b.setAttribute("aria-pressed", String(pressed));
        b.classList.toggle("on", pressed);
        if (!this.webgl && (g.dataset.group !== "show" || b.dataset.value === "3d")) b.disabled = true;
      });
    });
    this.root.dataset.show = this.show;
    this.root.dataset.model = this.model;
    this.root.dataset.nav = this.nav;
    this.updateOverlay();
  }

  updateOverlay() {
    const f = this.scene && this.scene.frames && this.scene.frames[this.frame];
    const url = f && (this.show === "frame" ? f.rgb : this.show === "mask" ? f.mask : null);
    if (url) {
      const src = resolveUrl(url);
      if (this.overlay.getAttribute("src") !== src) this.overlay.src = src;
      this.overlay.hidden = false;
    } else {
      this.overlay.hidden = true;
    }
  }

  // ---- three.js --------------------------------------------------------------------------------
  async ensureRenderer() {
    if (this.three || !this.webgl) return this.three;
    const m = await vendor();
    const { THREE } = m;
    const renderer = new THREE.WebGLRenderer({ canvas: this.canvas, antialias: false });
    renderer.setPixelRatio(Math.min(window.devicePixelRatio || 1, 2));
    renderer.setClearColor(0x15171c, 1);
    const scene = new THREE.Scene();
    const spark = new m.SparkRenderer({ renderer, onDirty: () => (this.dirty = true) });
    scene.add(spark);
    const camera = new THREE.PerspectiveCamera(50, 4 / 3, 0.01, 1000);
    camera.rotation.order = "YXZ"; // yaw about world up, then pitch: fly navigation
    this.three = { m, THREE, renderer, scene, camera, spark };
    new ResizeObserver(() => this.resize()).observe(this.stage);
    this.resize();
    this.installControls();
    const loop = (t) => {
      requestAnimationFrame(loop);
      this.tick(t);
    };
    requestAnimationFrame(loop);
    return this.three;
  }

  resize() {
    if (!this.three) return;
    const w = Math.max(1, this.stage.clientWidth);
    const h = Math.max(1, this.stage.clientHeight);
    this.three.renderer.setSize(w, h, false);
    this.dirty = true;
  }

  tick(t) {
    const dt = Math.min(0.1, (t - (this.lastT || t)) / 1000);
    this.lastT = t;
    if (this.keys.size && this.nav === "fly") this.flyStep(dt);
    if (this.orbit && this.nav === "orbit") this.orbit.update();
    if (!this.dirty) {
      if (this.renderedAt && !this.settledAt && performance.now() - this.renderedAt > SETTLE_MS) {
        this.settledAt = performance.now();
        this.settled += 1;
        this.root.dataset.settled = String(this.settled);
        this.times.settled = this.times.settled || this.settledAt;
      }
      return;
    }
    this.dirty = false;
    const { renderer, scene, camera } = this.three;
    renderer.render(scene, camera);
    this.renderedAt = performance.now();
    this.settledAt = null;
    if (this.scene && !this.times.firstRender) this.times.firstRender = this.renderedAt;
    // The first picture with the world in it (splats or mesh loaded), not just the cameras.
    if (this.root.dataset.state === "ready" && !this.times.firstContent) {
      this.times.firstContent = this.renderedAt;
    }
  }

  // ---- cameras ---------------------------------------------------------------------------------
  goTo(i, force = false) {
    if (!this.scene || !this.scene.cameras || !this.scene.cameras.length) return;
    const n = this.scene.cameras.length;
    i = Math.max(0, Math.min(n - 1, Math.round(Number(i) || 0)));
    const moved = force || i !== this.frame || this.away;
    this.frame = i;
    this.away = false;
    this.root.dataset.frame = String(i);
    if (this.three && moved) {
      const { THREE, camera } = this.three;
      const c = this.scene.cameras[i];
      const M = new THREE.Matrix4().fromArray(c.c2w);
      M.decompose(camera.position, camera.quaternion, camera.scale);
      camera.rotation.setFromQuaternion(camera.quaternion, "YXZ");
      camera.updateMatrixWorld(true);
      camera.projectionMatrix.fromArray(c.proj);
      camera.projectionMatrixInverse.copy(camera.projectionMatrix).invert();
      if (this.props.live) this.chase();
      if (this.orbit) this.retarget();
      this.highlight();
      this.dirty = true;
    }
    this.updateOverlay();
    this.describe();
  }

  // The live view watches the newest camera from behind and above (a chase camera), with a
  // wider lens, so the growing world and the path ahead are both in sight.
  chase() {
    const { THREE, camera } = this.three;
    const d = (this.scene && this.scene.scene_depth) || 2;
    const eye = camera.position.clone();
    const fwd = new THREE.Vector3(0, 0, -1).applyQuaternion(camera.quaternion);
    fwd.y = 0;
    if (fwd.lengthSq() < 1e-8) fwd.set(0, 0, -1);
    fwd.normalize();
    camera.position.copy(eye).addScaledVector(fwd, -0.6 * d).add(new THREE.Vector3(0, 0.35 * d, 0));
    camera.lookAt(eye.clone().addScaledVector(fwd, 0.6 * d));
    camera.rotation.setFromQuaternion(camera.quaternion, "YXZ");
    camera.fov = 70;
    camera.aspect = this.scene.width / this.scene.height;
    camera.near = 0.01;
    camera.far = 200 * d;
    camera.updateProjectionMatrix();
    camera.updateMatrixWorld(true);
  }

  // The user moved away from the frame's camera: an overlaid frame would no longer line up.
  leaveFrame() {
    if (this.away) return;
    this.away = true;
    if (this.show !== "3d" && this.webgl) {
      this.show = "3d";
      this.syncButtons();
    }
    this.describe();
  }

  describe() {
    if (!this.scene) return;
    const n = (this.scene.cameras || []).length;
    const where = this.away ? "moved away from" : "at";
    const help =
      this.nav === "fly"
        ? "drag to look, WASD to move, Q/E down/up, wheel forward/back (click the view first)"
        : "drag to orbit, right-drag to pan, wheel to zoom";
    this.status.textContent = n
      ? `${where} frame ${this.frame} of ${n - 1} · ${this.model} · ${help}`
      : "";
  }

  retarget() {
    const { THREE, camera } = this.three;
    const d = (this.scene && this.scene.scene_depth) || 2;
    const fwd = new THREE.Vector3(0, 0, -1).applyQuaternion(camera.quaternion);
    this.orbit.target.copy(camera.position).addScaledVector(fwd, d);
    this.orbit.update();
  }

  installControls() {
    const c = this.canvas;
    let drag = null;
    const pointers = new Map();
    c.addEventListener("pointerdown", (e) => {
      c.focus();
      if (this.nav !== "fly") return;
      pointers.set(e.pointerId, { x: e.clientX, y: e.clientY });
      c.setPointerCapture(e.pointerId);
      drag = { x: e.clientX, y: e.clientY };
    });
    c.addEventListener("pointermove", (e) => {
      if (this.nav !== "fly" || !pointers.has(e.pointerId)) return;
      const prev = pointers.get(e.pointerId);
      pointers.set(e.pointerId, { x: e.clientX, y: e.clientY });
      const { camera } = this.three;
      if (pointers.size === 1) {
        // One pointer: look around (yaw about world up, pitch about the camera's x).
        const k = 2.2 / Math.max(200, c.clientWidth);
        camera.rotation.y += (e.clientX - prev.x) * k;
        camera.rotation.x = Math.max(-1.5, Math.min(1.5, camera.rotation.x + (e.clientY - prev.y) * k));
      } else if (pointers.size === 2) {
        // Two fingers: move sideways / up with the midpoint (half each, both fingers report).
        const s = ((this.scene && this.scene.scene_depth) || 2) / Math.max(200, c.clientWidth);
        camera.translateX(-(e.clientX - prev.x) * s * 0.5);
        camera.translateY((e.clientY - prev.y) * s * 0.5);
      }
      camera.updateMatrixWorld(true);
      this.leaveFrame();
      this.dirty = true;
    });
    const up = (e) => {
      pointers.delete(e.pointerId);
      if (!pointers.size) drag = null;
    };
    c.addEventListener("pointerup", up);
    c.addEventListener("pointercancel", up);
    c.addEventListener(
      "wheel",
      (e) => {
        if (this.nav !== "fly") return;
        e.preventDefault();
        const d = (this.scene && this.scene.scene_depth) || 2;
        this.three.camera.translateZ(Math.sign(e.deltaY) * 0.06 * d);
        this.three.camera.updateMatrixWorld(true);
        this.leaveFrame();
        this.dirty = true;
      },
      { passive: false },
    );
    const KEYS = new Set(["KeyW", "KeyA", "KeyS", "KeyD", "KeyQ", "KeyE", "ArrowUp", "ArrowDown", "ArrowLeft", "ArrowRight"]);
    c.addEventListener("keydown", (e) => {
      if (!KEYS.has(e.code)) return;
      e.preventDefault();
      this.keys.add(e.code);
      this.fast = e.shiftKey;
    });
    c.addEventListener("keyup", (e) => this.keys.delete(e.code));
    c.addEventListener("blur", () => this.keys.clear());
    const { m, camera } = this.three;
    this.orbit = new m.OrbitControls(camera, c);
    this.orbit.enableDamping = false;
    this.orbit.enabled = false;
    this.orbit.addEventListener("change", () => {
      if (this.nav !== "orbit") return;
      this.leaveFrame();
      this.dirty = true;
    });
  }

  flyStep(dt) {
    const { camera } = this.three;
    const d = (this.scene && this.scene.scene_depth) || 2;
    const v = 0.5 * d * dt * (this.fast ? 3 : 1);
    const k = this.keys;
    const f = (k.has("KeyW") || k.has("ArrowUp") ? 1 : 0) - (k.has("KeyS") || k.has("ArrowDown") ? 1 : 0);
    const s = (k.has("KeyD") || k.has("ArrowRight") ? 1 : 0) - (k.has("KeyA") || k.has("ArrowLeft") ? 1 : 0);
    const u = (k.has("KeyE") ? 1 : 0) - (k.has("KeyQ") ? 1 : 0);
    if (!f && !s && !u) return;
    camera.translateZ(-f * v);
    camera.translateX(s * v);
    camera.position.y += u * v; // Q/E along world up (the frame is Y-up)
    camera.updateMatrixWorld(true);
    this.leaveFrame();
    this.dirty = true;
  }

  setNav(nav) {
    this.nav = nav;
    if (this.orbit) {
      this.orbit.enabled = nav === "orbit";
      if (nav === "orbit") this.retarget();
      else this.three.camera.rotation.setFromQuaternion(this.three.camera.quaternion, "YXZ");
    }
    this.syncButtons();
    this.describe();
  }

  setShow(show) {
    if (show !== "3d" && this.away) this.goTo(this.frame, true); // frames line up only there
    this.show = show;
    this.syncButtons();
  }

  setModel(model) {
    this.model = model;
    this.syncButtons();
    this.applyModel().catch((e) => this.message(`The ${model} could not be shown: ${e.message || e}`));
  }

  // ---- content ---------------------------------------------------------------------------------
  async setScene(scene) {
    if (!scene || !scene.cameras || !scene.cameras.length) {
      this.scene = scene || null;
      this.setState(this.webgl ? "empty" : "nowebgl");
      this.message((scene && scene.message) || "The 3D world shows here once it is loaded.");
      return;
    }
    this.times = { sceneSet: performance.now() };
    this.root.dataset.settled = String(this.settled);
    const first = !this.scene;
    this.scene = scene;
    this.stage.style.aspectRatio = `${scene.width} / ${scene.height}`;
    if (!this.webgl) {
      this.goTo(this.props.frame || 0, true);
      return;
    }
    if (this.root.dataset.state !== "ready") {
      this.setState("loading");
      this.message("Loading the 3D world…");
    }
    try {
      await this.ensureRenderer();
      this.buildHelpers();
      const follow = this.props.live && !this.away;
      this.goTo(follow ? scene.cameras.length - 1 : first ? this.props.frame || 0 : this.frame, true);
      await this.loadContent();
      this.setState("ready");
      this.message(scene.message || "");
      this.times.loaded = performance.now();
    } catch (e) {
      console.error("loci view:", e);
      this.setState("error");
      this.message(`The 3D world could not be shown: ${e.message || e}`);
    }
    this.dirty = true;
  }

  async loadContent() {
    const { m, THREE, scene } = this.three;
    const s = this.scene;
    const jobs = [];
    const splatUrl = s.splats && s.splats.url;
    if (splatUrl !== (this.loaded.splats && this.loaded.splats.url)) {
      if (this.loaded.splats) {
        scene.remove(this.loaded.splats.obj);
        this.loaded.splats.obj.dispose && this.loaded.splats.obj.dispose();
      }
      this.loaded.splats = null;
      if (splatUrl) {
        const obj = new m.SplatMesh({ url: resolveUrl(splatUrl) });
        obj.matrixAutoUpdate = false;
        obj.matrix.fromArray(s.splats.matrix);
        this.loaded.splats = { url: splatUrl, obj };
        scene.add(obj);
        jobs.push(obj.initialized);
      }
    }
    // Live preview: each lifted chunk arrives once (by id), as SPZ bytes, and stays.
    if (s.reset_chunks) this.clearChunks();
    for (const ch of s.chunks || []) {
      if (this.chunkIds.has(ch.id)) continue;
      const obj = new m.SplatMesh({ fileBytes: b64bytes(ch.spz), fileType: "spz" });
      obj.matrixAutoUpdate = false;
      obj.matrix.fromArray(ch.matrix);
      this.chunkObjs.push(obj);
      this.chunkIds.add(ch.id);
      scene.add(obj);
      jobs.push(obj.initialized);
    }
    const meshUrl = s.mesh && s.mesh.url;
    if (meshUrl !== (this.loaded.mesh && this.loaded.mesh.url)) {
      if (this.loaded.mesh) scene.remove(this.loaded.mesh.obj);
      this.loaded.mesh = meshUrl ? { url: meshUrl, obj: null } : null;
    }
    await Promise.all(jobs);
    await this.applyModel();
  }

  clearChunks() {
    for (const obj of this.chunkObjs) {
      this.three.scene.remove(obj);
      if (obj.dispose) obj.dispose();
    }
    this.chunkObjs = [];
    this.chunkIds = new Set();
  }

  async applyModel() {
    if (!this.three) return;
    const want = this.model;
    const mesh = this.loaded.mesh;
    if (want === "mesh" && mesh && !mesh.obj) {
      this.message("Loading the mesh…");
      const { m, THREE } = this.three;
      let gltf;
      try {
        gltf = await new m.GLTFLoader().loadAsync(resolveUrl(mesh.url));
      } catch (e) {
        // Links to stored files are short-lived: after a while, loading the world again
        // makes fresh ones.
        this.message(`The mesh could not load (${e.message || e}). Press "Load the world" again.`);
        return;
      }
      // Unlit vertex colours: the mesh shows the captured colours, as the frames do.
      gltf.scene.traverse((o) => {
        if (o.isMesh) o.material = new THREE.MeshBasicMaterial({ vertexColors: true, side: THREE.DoubleSide });
      });
      mesh.obj = gltf.scene;
      this.three.scene.add(mesh.obj);
      this.message("");
    }
    if (want === "mesh" && !mesh) this.message("This world has no mesh yet.");
    else if (this.msg.textContent.startsWith("This world has no mesh")) this.message("");
    if (this.loaded.splats) this.loaded.splats.obj.visible = want === "splats";
    for (const obj of this.chunkObjs) obj.visible = want === "splats";
    if (mesh && mesh.obj) mesh.obj.visible = want === "mesh";
    this.dirty = true;
    this.describe();
  }

  buildHelpers() {
    const { THREE, scene } = this.three;
    if (this.helpers) scene.remove(this.helpers);
    const s = this.scene;
    const group = new THREE.Group();
    const centres = s.cameras.map((c) => new THREE.Vector3(c.c2w[12], c.c2w[13], c.c2w[14]));
    if (centres.length > 1) {
      const g = new THREE.BufferGeometry().setFromPoints(centres);
      group.add(new THREE.Line(g, new THREE.LineBasicMaterial({ color: 0xffc440 })));
    }
    // Frusta of every k-th camera (at most ~40) in the camera's own intrinsics.
    const d = 0.05 * (s.scene_depth || 2);
    const step = Math.max(1, Math.ceil(s.cameras.length / 40));
    this.frusta = [];
    for (let i = 0; i < s.cameras.length; i++) {
      if (i % step && i !== s.cameras.length - 1) continue;
      const f = frustumLines(THREE, s.cameras[i], d);
      f.userData.index = i;
      this.frusta.push(f);
      group.add(f);
    }
    group.visible = this.bar.querySelector(".lv-path input").checked;
    this.helpers = group;
    scene.add(group);
    this.highlight();
  }

  highlight() {
    for (const f of this.frusta || []) {
      const here = f.userData.index === this.frame;
      f.visible = !(here && !this.away && !this.props.live); // at a frame: it is the view
      f.material.color.setHex(here ? 0x50c8ff : 0xffc440);
    }
  }
}

// Lines of a camera frustum (apex at the camera, image rectangle at distance d), from its
// projection matrix: the corners are the inverse projection of the NDC corners.
function frustumLines(THREE, cam, d) {
  const P = new THREE.Matrix4().fromArray(cam.proj);
  const Pinv = P.clone().invert();
  const corners = [
    [-1, -1],
    [1, -1],
    [1, 1],
    [-1, 1],
  ].map(([x, y]) => {
    const v = new THREE.Vector3(x, y, 0.5).applyMatrix4(Pinv); // a point on the corner ray
    return v.multiplyScalar(d / -v.z);
  });
  const o = new THREE.Vector3(0, 0, 0);
  const pts = [];
  for (let i = 0; i < 4; i++) pts.push(o, corners[i], corners[i], corners[(i + 1) % 4]);
  const g = new THREE.BufferGeometry().setFromPoints(pts);
  const material = new THREE.LineBasicMaterial({ color: 0xffc440, transparent: true, opacity: 0.6 });
  const lines = new THREE.LineSegments(g, material);
  lines.matrixAutoUpdate = false;
  lines.matrix.fromArray(cam.c2w);
  return lines;
}

export function mount(element, props, trigger, watch) {
  const view = new WorldView(element, props, trigger);
  view.root.__lociView = view; // for the page's other controls (the frame slider) and tests
  const apply = () => view.setScene(props.scene);
  watch("scene", apply);
  watch("frame", () => view.goTo(props.frame));
  if (props.scene) apply();
  return view;
}
