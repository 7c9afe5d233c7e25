// What the studio's 3D view uses from three.js and Spark, bundled into one ES module
// (assets/vendor/loci3d.js) so the browser needs no import map and no CDN.
export * as THREE from "three";
export { SparkRenderer, SplatMesh } from "@sparkjsdev/spark";
export { GLTFLoader } from "three/addons/loaders/GLTFLoader.js";
export { OrbitControls } from "three/addons/controls/OrbitControls.js";
export { PointerLockControls } from "three/addons/controls/PointerLockControls.js";
