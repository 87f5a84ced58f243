/** The package's version, as the command line and the OpenAPI document report it. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { projectRoot } from './config.js';

export const version = (JSON.parse(readFileSync(join(projectRoot, 'package.json'), 'utf8')) as { version: string }).version;
