#!/usr/bin/env node
// check.js - validates TDs with ajv against the W3C TD 1.1 JSON Schema
// (from the npm package wot-thing-description-types), independently of
// twind's own C validator.
//
// Input: a file of JSON lines written by dump_tds, each
//   {"expect": "valid" | "invalid", "name": "...", "td": {...},
//    "c_valid": <twind's own validator's verdict>, "c_errors": [...]}
// Every "valid" TD (what twind's directory returned) must pass the schema;
// every "invalid" TD (one twind rejected, for a rule the schema states) must
// fail it, which shows this check is able to fail; and twind's C validator
// must reach the same verdict as ajv on each. Exit status 1 on any
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
let valid = 0, invalid = 0, bad = 0, disagree = 0;
for (const [i, line] of lines.entries()) {
  let item;
  try {
    item = JSON.parse(line);
  } catch (e) {
    console.error(`line ${i + 1}: not JSON: ${e.message}`);
    process.exit(2);
  }
  const ok = validate(item.td);
  // twind's C validator (td_validate.c) must agree with ajv on every TD
  if (item.c_valid !== undefined && item.c_valid !== ok) {
    bad++;
    disagree++;
    if (disagree <= 5) {
      console.error(`DISAGREE ${item.name}: ajv says ${ok ? 'valid' : 'invalid'}, ` +
                    `twind's validator ${item.c_valid ? 'valid' : 'invalid'}`);
      if (!ok) console.error(JSON.stringify(validate.errors));
      if (item.c_errors) console.error(JSON.stringify(item.c_errors));
    }
  }
  if (item.expect === 'valid') {
    valid++;
    if (!ok) {
      bad++;
      if (bad <= 5) {
        console.error(`FAIL ${item.name}: twind returned a TD the W3C schema rejects:`);
        for (const e of validate.errors) {
          // the value at the failing place, to see what is wrong at a glance
          let v = item.td;
          for (const k of e.instancePath.split('/').slice(1)) v = v === undefined ? v : v[k];
          console.error(`  ${e.instancePath || '/'}: ${e.message}` +
                        (v !== undefined ? ` (value: ${JSON.stringify(v)})` : ''));
        }
      }
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
            `${bad} mismatches (${disagree} where the two validators disagree)`);
if (valid === 0) {
  console.error('no TDs to check');
  process.exit(1);
}
process.exit(bad ? 1 : 0);
