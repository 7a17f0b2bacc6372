// Validates every object of a multi-document Kubernetes YAML stream (the
// output of `kubectl kustomize`) against the JSON schemas that npm
// kubernetes-models (core and apps APIs) and @kubernetes-models/
// prometheus-operator (ServiceMonitor) ship.
// Usage: node validate_k8s.mjs MANIFESTS.yaml   (exit 1 on the first error)
import { readFileSync } from 'node:fs';
import { parseAllDocuments } from 'yaml';

// apiVersion -> the package path of its models.
function modulePath(apiVersion, kind) {
  if (apiVersion.startsWith('monitoring.coreos.com/')) {
    return `@kubernetes-models/prometheus-operator/${apiVersion}/${kind}`;
  }
  return `kubernetes-models/${apiVersion}/${kind}`;
}

const file = process.argv[2];
const docs = parseAllDocuments(readFileSync(file, 'utf8'));
let count = 0;
for (const doc of docs) {
  if (doc.errors.length > 0) throw new Error(`${file}: YAML: ${doc.errors[0].message}`);
  const obj = doc.toJS();
  if (obj === null) continue;
  const { apiVersion, kind } = obj;
  const where = `${kind} ${obj.metadata?.name} (${apiVersion})`;
  let Model;
  try {
    Model = (await import(modulePath(apiVersion, kind)))[kind];
    if (Model === undefined) throw new Error('not exported');
  } catch (e) {
    console.error(`FAIL ${where}: no schema for this kind`);
    process.exit(1);
  }
  try {
    new Model(obj).validate();
  } catch (e) {
    console.error(`FAIL ${where}: ${e.message}`);
    for (const err of e.errors ?? []) console.error(`  ${err.instancePath} ${err.message}`);
    process.exit(1);
  }
  console.log(`ok   ${where}`);
  ++count;
}
if (count === 0) {
  console.error(`FAIL ${file}: no objects`);
  process.exit(1);
}
console.log(`${count} objects valid`);
