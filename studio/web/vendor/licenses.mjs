// Copy the licence of every bundled package, with its pinned version, next to the bundle.
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";

const out = "../assets/vendor/licenses";
mkdirSync(out, { recursive: true });
const lines = [];
for (const name of ["three", "@sparkjsdev/spark", "fflate"]) {
  const pkg = JSON.parse(readFileSync(`node_modules/${name}/package.json`, "utf8"));
  const file = `${name.replace(/[@/]/g, "_").replace(/^_/, "")}-LICENSE.txt`;
  writeFileSync(`${out}/${file}`, readFileSync(`node_modules/${name}/LICENSE`, "utf8"));
  lines.push(`${name}@${pkg.version}\t${pkg.license}\tlicenses/${file}`);
}
writeFileSync("../assets/vendor/VERSIONS.txt", lines.join("\n") + "\n");
console.log(lines.join("\n"));
