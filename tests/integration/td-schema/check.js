#!/usr/bin/env node
// check.js - validates TDs with ajv against the W3C TD 1.1 JSON Schema
// (from the npm package wot-thing-description-types), independently of
// twind's own C validator.
//
// Input: a file of JSON lines written by dump_tds, each
//   {"expect": "valid" | "invalid", "name": "...", "td": {...}}
// Every "valid" TD (what twind's directory returned) must pass the schema;
// every "invalid" TD (one twind rejected, for a rule the schema states) must
// fail it, which shows this check is able to fail. Exit status 1 on any
// mismatch, 2 on bad input.
'use strict';
const fs = require('fs');
const path = require('path');
const Ajv = require('ajv');
const addFormats = require('ajv-formats');

const schemaPath = path.join(__dirname, 'node_modules', 'wot-thing-description-types',
                             'schema', 'td-json-schema-validation.json');
const schema = JSON.parse(fs.readFileSync(schemaPath, 'utf8'));
const ajv = new Ajv({ strict: false, allErrors: true });
addFormats(ajv);
const validate = ajv.compile(schema);

if (process.argv.length < 3) {
  console.error('usage: check.js TDS.jsonl');
  process.exit(2);
}
const lines = fs.readFileSync(process.argv[2], 'utf8').split('\n').filter((l) => l.trim());
let valid = 0, invalid = 0, bad = 0;
for (const [i, line] of lines.entries()) {
  let item;
  try {
    item = JSON.parse(line);
  } catch (e) {
    console.error(`line ${i + 1}: not JSON: ${e.message}`);
    process.exit(2);
  }
  const ok = validate(item.td);
  if (item.expect === 'valid') {
    valid++;
    if (!ok) {
      bad++;
      console.error(`FAIL ${item.name}: twind returned a TD the W3C schema rejects:`);
      console.error(JSON.stringify(validate.errors, null, 1));
      console.error(JSON.stringify(item.td));
    }
  } else {
    invalid++;
    if (ok) {
      bad++;
      console.error(`FAIL ${item.name}: the schema accepts a TD twind rejects as invalid`);
    }
  }
}
console.log(`${valid} TDs from the directory checked, ${invalid} broken TDs checked, ` +
            `${bad} mismatches`);
if (valid === 0) {
  console.error('no TDs to check');
  process.exit(1);
}
process.exit(bad ? 1 : 0);
