#!/usr/bin/env node
// The Prefect UI as an engineer sees it: open a flow run's page in headless
// Debian Chromium (playwright-core), find its artifacts, open the report,
// take screenshots. Prints ONE JSON line of what it found; diagnostics go to stderr.
//
//   node prefect_ui.mjs <ui_url> <flow_run_id> <report_key> <out_dir>
//
// Exit codes: 0 found the run and its report, 1 did not, 3 usage or browser failure.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const CHROMIUM = process.env.VIDPIPE_CHROMIUM || '/usr/bin/chromium';
const [ui, runId, reportKey, outDir] = process.argv.slice(2);
if (!ui || !runId || !reportKey || !outDir) {
  process.stderr.write('usage: node prefect_ui.mjs <ui_url> <flow_run_id> <report_key> <out_dir>\n');
  process.exit(3);
}
mkdirSync(outDir, { recursive: true });

const facts = { run_page: false, run_name: null, report_listed: false, report_text: null };
let browser;
try {
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  page.setDefaultTimeout(30000);
  await page.goto(`${ui}/runs/flow-run/${runId}`, { waitUntil: 'networkidle' });
  const name = page.getByText(/process-v[0-9a-f]{15}/).first();
  await name.waitFor();
  facts.run_page = true;
  facts.run_name = (await name.textContent()).trim();
  await page.screenshot({ path: join(outDir, 'flow-run.png'), fullPage: true });

  // The run page's tabs (Logs, Task Runs, Subflow Runs, Artifacts, ...): click, as a person would.
  const tab = page.getByRole('tab', { name: 'Artifacts', exact: true })
    .or(page.getByRole('button', { name: 'Artifacts', exact: true }))
    .or(page.getByText('Artifacts', { exact: true }))
    .first();
  await tab.click();
  const card = page.getByText(reportKey, { exact: true }).first();
  await card.waitFor();
  facts.report_listed = true;
  await page.screenshot({ path: join(outDir, 'artifacts.png'), fullPage: true });
  await card.click();
  await page.waitForURL(/\/artifacts\/artifact\//);
  const table = page.locator('table').first();
  await table.waitFor();
  facts.report_text = (await page.locator('body').innerText()).slice(0, 20000);
  await page.screenshot({ path: join(outDir, 'report.png'), fullPage: true });
} catch (err) {
  process.stderr.write(`prefect_ui.mjs: ${err && err.stack ? err.stack : err}\n`);
  try {  // what the page showed instead, for whoever reads the failure
    const page = browser && browser.contexts()[0] && browser.contexts()[0].pages()[0];
    if (page) {
      process.stderr.write(`at ${page.url()}:\n${(await page.locator('body').innerText()).slice(0, 3000)}\n`);
      await page.screenshot({ path: join(outDir, 'failure.png'), fullPage: true });
    }
  } catch (inner) {
    process.stderr.write(`prefect_ui.mjs: no failure screenshot: ${inner}\n`);
  }
} finally {
  if (browser) await browser.close();
}
process.stdout.write(JSON.stringify(facts) + '\n');
process.exit(facts.report_listed && facts.report_text ? 0 : 1);
